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

__all__ = ["Transform", "compose", "flip", "jitter"]

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


def compose(*transforms: Transform) -> Transform:
    """Apply ``transforms`` left to right."""

    def t(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        for tr in transforms:
            x = tr(x, generator)
        return x

    return t
