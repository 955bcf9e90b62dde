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

import math
import re
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn.functional import adaptive_avg_pool2d

from actstats.errors import ActstatsError

__all__ = ["Reduction", "UnitColumns", "parse_reduce_options", "parse_reduction"]

_GRID_RE = re.compile(r"^grid:(\d+)$")


@dataclass(frozen=True)
class UnitColumns:
    """Where a unit lives in a reduced row: its value is the mean of ``columns``.

    ``region`` is the half-open ``(y0, y1, x0, x1)`` block of the layer's own grid the
    value covers (a conv position, or the adaptive-pooling cell that holds it); None for
    an fc unit or a whole channel. ``exact`` is False where the stored value only
    approximates the unit (a position read from its grid cell, or a channel mean taken
    over unequal cells).
    """

    columns: np.ndarray
    region: tuple[int, int, int, int] | None
    exact: bool
    description: str


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

    def unit_columns(
        self, layer: str, shape: tuple[int, ...], index: int, yx: tuple[int, int] | None = None
    ) -> UnitColumns:
        """The columns of a reduced row that hold unit ``index`` (at ``yx``) of ``layer``.

        A conv channel is the spatial mean of what was stored (all H*W values, the
        channel mean, or the S*S grid cells); a position ``yx`` of the layer's H x W map
        is that value (``full``) or the grid cell containing it (``grid:S``). A
        ``mean`` store keeps no positions, so asking for one is an error.
        """
        if len(shape) != 3:
            if yx is not None:
                raise ActstatsError(
                    f"--neuron {layer}:{index}@{yx[0]},{yx[1]}: @Y,X needs a conv layer; "
                    f"{layer} has shape {list(shape)}"
                )
            _check_index(layer, index, self.dim(shape))
            return UnitColumns(np.array([index]), None, True, f"unit {index}")
        c, h, w = shape
        _check_index(layer, index, c)
        if yx is not None and not (0 <= yx[0] < h and 0 <= yx[1] < w):
            raise ActstatsError(
                f"--neuron {layer}:{index}@{yx[0]},{yx[1]}: position out of range; "
                f"valid Y 0..{h - 1}, X 0..{w - 1}"
            )
        return _CONV_COLUMNS[self.kind](self, layer, (c, h, w), index, yx)

    def column_name(self, layer: str, shape: tuple[int, ...], column: int) -> str:
        """A person's name for column ``column`` of a reduced row (inverse of unit_columns).

        ``fc7:12``; ``conv5_3:12`` (a channel mean); ``conv5_3:12@3,4`` (a position of a
        ``full`` conv layer); ``conv5_3:12 cell 1,0/2x2`` (a ``grid:S`` cell).
        """
        if len(shape) != 3 or self.kind == "mean":
            return f"{layer}:{column}"
        if self.kind == "full":
            c, rest = divmod(column, shape[1] * shape[2])
            return f"{layer}:{c}@{rest // shape[2]},{rest % shape[2]}"
        s = self.size
        c, rest = divmod(column, s * s)
        return f"{layer}:{c} cell {rest // s},{rest % s}/{s}x{s}"

    def __call__(self, acts: torch.Tensor) -> torch.Tensor:
        """(N, ...) activations -> (N, D) rows, on the activations' device."""
        if self.kind == "mean":
            return acts.mean(dim=(2, 3))
        if self.kind == "grid":
            return adaptive_avg_pool2d(acts, self.size).flatten(1)
        return acts.flatten(1)


def _check_index(layer: str, index: int, n: int) -> None:
    if not 0 <= index < n:
        raise ActstatsError(f"--neuron {layer}:{index}: index out of range; {layer} has 0..{n - 1}")


def _cell(i: int, size: int, s: int) -> tuple[int, int]:
    """Half-open span of adaptive-pooling cell ``i`` of ``s`` over ``size`` positions."""
    return (i * size) // s, math.ceil((i + 1) * size / s)


def _full_columns(
    red: Reduction, layer: str, shape: tuple[int, int, int], c: int, yx: tuple[int, int] | None
) -> UnitColumns:
    _, h, w = shape
    if yx is None:
        return UnitColumns(
            c * h * w + np.arange(h * w), None, True, f"channel {c}, mean of {h}x{w}"
        )
    y, x = yx
    return UnitColumns(
        np.array([c * h * w + y * w + x]), (y, y + 1, x, x + 1), True, f"channel {c} at {y},{x}"
    )


def _mean_columns(
    red: Reduction, layer: str, shape: tuple[int, int, int], c: int, yx: tuple[int, int] | None
) -> UnitColumns:
    if yx is not None:
        raise ActstatsError(
            f"--neuron {layer}:{c}@{yx[0]},{yx[1]}: the store keeps only channel means of "
            f"{layer}; use {layer}:{c}, or collect again with --reduce {layer}=grid:S or full"
        )
    return UnitColumns(np.array([c]), None, True, f"channel {c}, spatial mean")


def _grid_columns(
    red: Reduction, layer: str, shape: tuple[int, int, int], c: int, yx: tuple[int, int] | None
) -> UnitColumns:
    _, h, w = shape
    s = red.size
    even = h % s == 0 and w % s == 0
    if yx is None:
        desc = f"channel {c}, mean of the stored {s}x{s} grid"
        return UnitColumns(c * s * s + np.arange(s * s), None, even, desc)
    i = next(i for i in range(s) if _cell(i, h, s)[0] <= yx[0] < _cell(i, h, s)[1])
    j = next(j for j in range(s) if _cell(j, w, s)[0] <= yx[1] < _cell(j, w, s)[1])
    (y0, y1), (x0, x1) = _cell(i, h, s), _cell(j, w, s)
    exact = (y1 - y0) * (x1 - x0) == 1
    desc = (
        f"channel {c}, grid cell {i},{j} of {s}x{s} (positions y {y0}..{y1 - 1}, x {x0}..{x1 - 1})"
    )
    return UnitColumns(np.array([c * s * s + i * s + j]), (y0, y1, x0, x1), exact, desc)


_CONV_COLUMNS = {"full": _full_columns, "mean": _mean_columns, "grid": _grid_columns}


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
