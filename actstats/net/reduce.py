"""Per-layer reductions of a batch of activations to rows of a store.

Whole conv layers are too big to keep for every image (VGG16's are ~30 MB
per image), so each layer is reduced before it is written:

``full``
    every value, flattened in the layer's own order (C, H, W).
``mean``
    the spatial mean of each channel of a conv layer: (C,).
``grid:S``
    adaptive average pooling to S x S (``torch.nn.functional.adaptive_avg_pool2d``),
    flattened channel-major: (C * S * S,), index ``c * S * S + i * S + j``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch.nn.functional import adaptive_avg_pool2d

from actstats.errors import ActstatsError

__all__ = ["Reduction", "parse_reduce_options", "parse_reduction"]

_GRID_RE = re.compile(r"^grid:(\d+)$")


@dataclass(frozen=True)
class Reduction:
    """A parsed reduction: ``kind`` is ``full``, ``mean`` or ``grid`` (with ``size``)."""

    kind: str
    size: int = 0

    def __str__(self) -> str:
        return f"grid:{self.size}" if self.kind == "grid" else self.kind

    def check(self, layer: str, shape: tuple[int, ...]) -> None:
        """Refuse a reduction that does not fit a layer's (C, H, W) or (D,) shape."""
        if self.kind == "full":
            return
        if len(shape) != 3:
            raise ActstatsError(
                f"--reduce {layer}={self}: needs a conv layer (C, H, W) but {layer} has "
                f"shape {list(shape)}; use {layer}=full"
            )
        if self.kind == "grid" and not 1 <= self.size <= min(shape[1:]):
            raise ActstatsError(
                f"--reduce {layer}={self}: S must be 1..{min(shape[1:])} for {layer} of "
                f"shape {list(shape)}"
            )

    def dim(self, shape: tuple[int, ...]) -> int:
        """Length of one image's reduced row."""
        if self.kind == "full":
            n = 1
            for s in shape:
                n *= s
            return n
        if self.kind == "mean":
            return shape[0]
        return shape[0] * self.size * self.size

    def __call__(self, acts: torch.Tensor) -> torch.Tensor:
        """(N, ...) activations -> (N, D) rows, on the activations' device."""
        if self.kind == "mean":
            return acts.mean(dim=(2, 3))
        if self.kind == "grid":
            return adaptive_avg_pool2d(acts, self.size).flatten(1)
        return acts.flatten(1)


def parse_reduction(text: str) -> Reduction:
    """``"full"``, ``"mean"`` or ``"grid:S"`` -> :class:`Reduction`."""
    text = text.strip()
    if text in ("full", "mean"):
        return Reduction(text)
    match = _GRID_RE.match(text)
    if match and int(match[1]) >= 1:
        return Reduction("grid", int(match[1]))
    raise ActstatsError(f"--reduce {text!r}: use full, mean or grid:S (S >= 1, e.g. grid:2)")


def parse_reduce_options(items: list[str] | None) -> dict[str, str]:
    """Repeated ``--reduce LAYER=full|mean|grid:S`` flags -> ``{layer: reduction}``."""
    out: dict[str, str] = {}
    for item in items or []:
        layer, sep, value = item.partition("=")
        if not sep or not layer.strip():
            raise ActstatsError(
                f"--reduce {item!r}: expected LAYER=full|mean|grid:S (e.g. conv4_3=grid:2)"
            )
        out[layer.strip()] = str(parse_reduction(value))
    return out
