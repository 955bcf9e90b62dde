"""Random image transforms applied before each forward pass.

A transform is a pure callable ``t(x, generator) -> x`` on a batch (N, 3, H, W);
randomness comes only from the CPU ``generator`` passed in, so a run is
deterministic for a given seed on any device. Each image of the batch gets its
own draw, so batched samples do not share shifts. Robustness to shifts and
flips is what keeps an optimized image from being adversarial noise.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.nn import functional as F  # noqa: N812

__all__ = ["Transform", "compose", "flip", "jitter", "scale_rotate"]

Transform = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def jitter(d: int) -> Transform:
    """Shift each image by up to ``d`` pixels in x and y (reflect-padded, same size)."""

    def t(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if d <= 0:
            return x
        n, _, h, w = x.shape
        offsets = torch.randint(0, 2 * d + 1, (n, 2), generator=generator).tolist()
        padded = F.pad(x, (d, d, d, d), mode="reflect")
        return torch.stack(
            [padded[i, :, oy : oy + h, ox : ox + w] for i, (oy, ox) in enumerate(offsets)]
        )

    return t


def flip(p: float = 0.5) -> Transform:
    """Mirror each image left-right with probability ``p``."""

    def t(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        chosen = torch.rand(x.shape[0], generator=generator) < p
        if not chosen.any():
            return x
        mask = chosen.to(x.device).view(-1, 1, 1, 1)
        return torch.where(mask, x.flip(3), x)

    return t


def scale_rotate(scale: float, degrees: float) -> Transform:
    """Zoom each image by a factor in ``[1 - scale, 1 + scale]`` and rotate it by up to
    ``degrees``, about its centre (bilinear, reflected borders, same size).

    Lucent's ``random_scale`` and ``random_rotate``: an image that excites the unit at
    every small zoom and tilt holds its object at no single pixel grid, so it is less an
    adversarial pattern of this network and more something another network sees too.
    """

    def t(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if scale <= 0 and degrees <= 0:
            return x
        n = x.shape[0]
        zoom = 1.0 + scale * (2 * torch.rand(n, generator=generator, dtype=torch.float64) - 1)
        angle = torch.deg2rad(
            degrees * (2 * torch.rand(n, generator=generator, dtype=torch.float64) - 1)
        )
        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
        zero = torch.zeros_like(cos)
        theta = torch.stack(
            [torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1
        )
        grid = F.affine_grid(theta.to(x), list(x.shape), align_corners=False)
        return F.grid_sample(
            x, grid, mode="bilinear", padding_mode="reflection", align_corners=False
        )

    return t


def compose(*transforms: Transform) -> Transform:
    """Apply ``transforms`` left to right."""

    def t(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        for tr in transforms:
            x = tr(x, generator)
        return x

    return t
