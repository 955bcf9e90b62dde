"""Per-layer reductions of a batch of activations to rows of a store, for every layout.

Whole layers are too big to keep for every image (VGG16's are ~30 MB per image, a
ViT block's 197 x 768 tokens 151,296 values), so each layer is reduced before it is
written. A reduction knows the layer's :class:`~actstats.net.layout.Layout`, so "the
mean of each channel" means the same thing for a CNN (N, C, H, W), a Swin stage
(N, H, W, C) and a ViT block (N, 1 + H*W, C). Parts (joined by ``+``, stored one
after another in the order given):

``full``
    every value, flattened in the layer's own axis order.
``mean``
    per channel, the mean over space (NCHW, NHWC) or over the patch tokens (NTC;
    leading tokens such as the class token are kept apart): (C,).
``grid:S``
    the spatial grid (for ViT the patch tokens reshaped to their grid) average-pooled
    to S x S (``adaptive_avg_pool2d``), channel-major: index ``c * S * S + i * S + j``.
``cls``
    the leading tokens of a token layer (ViT's class token): (P * C,).
``tokens:S``
    the patch tokens, in sequence order, average-pooled to S segments
    (``adaptive_avg_pool1d``), channel-major: index ``c * S + s``.

Every reduction is a differentiable torch function, so collection, synthesis
priors and the unit objective all read a layer through the same code.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn.functional import adaptive_avg_pool1d, adaptive_avg_pool2d

from actstats.errors import ActstatsError
from actstats.net.layout import Layout

__all__ = [
    "DEFAULT_MAX_VALUES",
    "Reduction",
    "UnitColumns",
    "channels_first",
    "default_reduction",
    "infer_layout",
    "parse_reduce_options",
    "parse_reduction",
    "patch_tokens",
    "stored_reduction",
    "unit_value",
]

#: Values per image and layer that a default reduction may store (64 KB in float32).
DEFAULT_MAX_VALUES = 16384

_PART_RE = re.compile(r"^(full|mean|cls|grid:(\d+)|tokens:(\d+))$")
_SYNTAX = "full, mean, grid:S, cls, tokens:S, or parts joined by + (e.g. cls+grid:2)"


def infer_layout(x: torch.Tensor) -> Layout:
    """The layout of a batch when none was recorded (stores before layouts): NCHW or NC."""
    return Layout("NCHW") if x.dim() == 4 else Layout("NC") if x.dim() == 2 else Layout("other")


def channels_first(x: torch.Tensor, layout: Layout) -> torch.Tensor:
    """A batch of a spatial layer as (N, C, H, W), whatever its layout (a view where possible)."""
    if layout.kind == "NCHW":
        return x
    if layout.kind == "NHWC":
        return x.permute(0, 3, 1, 2)
    if layout.kind == "NTC" and layout.grid is not None:
        h, w = layout.grid
        return patch_tokens(x, layout).transpose(1, 2).reshape(x.shape[0], -1, h, w)
    raise ActstatsError(f"layout {layout}: has no spatial grid")


def patch_tokens(x: torch.Tensor, layout: Layout) -> torch.Tensor:
    """A token layer's tokens after the leading ones, (N, T - P, C); 4-D windows flattened."""
    if layout.kind != "NTC":
        raise ActstatsError(f"layout {layout}: is not a token sequence")
    x = x.flatten(1, -2)
    return x[:, layout.prefix :]


def _mean(x: torch.Tensor, layout: Layout) -> torch.Tensor:
    if layout.kind == "NTC":
        return patch_tokens(x, layout).mean(1)
    return channels_first(x, layout).mean(dim=(2, 3))


def _grid(x: torch.Tensor, layout: Layout, s: int) -> torch.Tensor:
    return adaptive_avg_pool2d(channels_first(x, layout), s).flatten(1)


def _cls(x: torch.Tensor, layout: Layout) -> torch.Tensor:
    return x.flatten(1, -2)[:, : layout.prefix].flatten(1)


def _tokens(x: torch.Tensor, layout: Layout, s: int) -> torch.Tensor:
    return adaptive_avg_pool1d(patch_tokens(x, layout).transpose(1, 2), s).flatten(1)


@dataclass(frozen=True)
class UnitColumns:
    """Where a unit lives in a reduced row: its value is the mean of ``columns``.

    ``region`` is the half-open ``(y0, y1, x0, x1)`` block of the layer's own grid the
    value covers (a position, or the adaptive-pooling cell that holds it); None for
    an fc unit or a whole channel. ``exact`` is False where the stored value only
    approximates the unit (a position read from its grid cell, or a channel mean taken
    over unequal cells or segments).
    """

    columns: np.ndarray
    region: tuple[int, int, int, int] | None
    exact: bool
    description: str


@dataclass(frozen=True)
class Part:
    """One part of a reduction: ``kind`` is full, mean, grid, cls or tokens (with ``size``)."""

    kind: str
    size: int = 0

    def __str__(self) -> str:
        return f"{self.kind}:{self.size}" if self.kind in ("grid", "tokens") else self.kind

    def applies(self, layout: Layout, shape: tuple[int, ...]) -> str | None:
        """Why this part does not fit a layer (None when it does)."""
        if self.kind == "full":
            return None
        if layout.kind in ("NC", "other"):
            return f"needs a spatial or token layer but the layout is {layout}"
        if self.kind == "mean":
            return None
        if self.kind == "cls":
            return None if layout.kind == "NTC" and layout.prefix else "needs leading tokens"
        if self.kind == "tokens":
            if layout.kind != "NTC":
                return f"needs a token layer (NTC) but the layout is {layout}"
            n = _n_tokens(layout, shape)
            return None if 1 <= self.size <= n else f"S must be 1..{n}"
        grid = layout.grid_shape(shape) if layout.spatial else None
        if grid is None:
            return f"needs a spatial grid but the layout is {layout}"
        return None if 1 <= self.size <= min(grid) else f"S must be 1..{min(grid)}"

    def dim(self, layout: Layout, shape: tuple[int, ...]) -> int:
        """Length of this part of one image's row."""
        if self.kind == "full":
            return _prod(shape)
        c = layout.channels(shape)
        per_channel = {"mean": 1, "grid": self.size**2, "tokens": self.size, "cls": layout.prefix}
        return c * per_channel[self.kind]

    def __call__(self, x: torch.Tensor, layout: Layout) -> torch.Tensor:
        if self.kind == "full":
            return x.flatten(1)
        if self.kind == "mean":
            return _mean(x, layout)
        if self.kind == "grid":
            return _grid(x, layout, self.size)
        if self.kind == "cls":
            return _cls(x, layout)
        return _tokens(x, layout, self.size)


def _prod(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


def _n_tokens(layout: Layout, shape: tuple[int, ...]) -> int:
    return _prod(shape[:-1]) - layout.prefix


@dataclass(frozen=True)
class Reduction:
    """A parsed reduction (one or more :class:`Part`) and the layout it reads.

    ``layout`` None means "infer from the tensor" (NCHW for 4-D, NC for 2-D), which is
    what stores written before layouts were recorded hold.
    """

    parts: tuple[Part, ...]
    layout: Layout | None = None

    def __str__(self) -> str:
        return "+".join(map(str, self.parts))

    @property
    def kind(self) -> str:
        """The first part's kind (``full``, ``mean``, ``grid``, ``cls`` or ``tokens``)."""
        return self.parts[0].kind

    def with_layout(self, layout: Layout | None) -> Reduction:
        """The same parts reading ``layout``."""
        return Reduction(self.parts, layout)

    def _layout(self, shape: tuple[int, ...]) -> Layout:
        if self.layout is not None:
            return self.layout
        return Layout("NCHW") if len(shape) == 3 else Layout("NC")

    def check(self, layer: str, shape: tuple[int, ...]) -> None:
        """Refuse a reduction that does not fit the layer's shape and layout."""
        layout = self._layout(shape)
        for part in self.parts:
            why = part.applies(layout, shape)
            if why:
                raise ActstatsError(
                    f"--reduce {layer}={self}: {part} {why} ({layer} has shape {list(shape)}, "
                    f"layout {layout}); see `actstats layers`"
                )

    def dim(self, shape: tuple[int, ...]) -> int:
        """Length of one image's reduced row."""
        layout = self._layout(shape)
        return sum(p.dim(layout, shape) for p in self.parts)

    def unit_columns(
        self, layer: str, shape: tuple[int, ...], index: int, yx: tuple[int, int] | None = None
    ) -> UnitColumns:
        """The columns of a reduced row that hold unit ``index`` (at ``yx``) of ``layer``.

        An NC unit is its own column. A channel of a spatial or token layer is read,
        in this order of preference, from a ``mean`` part (exact), the ``full`` part's
        patch positions, the ``grid:S`` cells or the ``tokens:S`` segments (their
        mean); a position ``yx`` of the layer's grid is that value of a ``full`` part
        or the ``grid:S`` cell containing it. Whatever the layout (NCHW, NHWC, tokens).
        """
        layout = self._layout(shape)
        if layout.kind in ("NC", "other"):
            if yx is not None:
                raise ActstatsError(
                    f"--neuron {layer}:{index}@{yx[0]},{yx[1]}: @Y,X needs a conv layer; "
                    f"{layer} has shape {list(shape)}, layout {layout}"
                )
            _check_index(layer, index, self.dim(shape))
            return UnitColumns(np.array([index]), None, True, f"unit {index}")
        _check_index(layer, index, layout.channels(shape))
        grid = layout.grid_shape(shape)
        if yx is not None:
            if grid is None:
                raise ActstatsError(
                    f"--neuron {layer}:{index}@{yx[0]},{yx[1]}: @Y,X needs a spatial grid; "
                    f"{layer} has layout {layout}"
                )
            if not (0 <= yx[0] < grid[0] and 0 <= yx[1] < grid[1]):
                raise ActstatsError(
                    f"--neuron {layer}:{index}@{yx[0]},{yx[1]}: position out of range; "
                    f"valid Y 0..{grid[0] - 1}, X 0..{grid[1] - 1}"
                )
        found = self._locate(layout, shape, index, yx)
        if isinstance(found, UnitColumns):
            return found
        raise ActstatsError(
            f"--neuron {layer}:{index}{_at(yx)}: {found.format(layer=layer, c=index)}"
        )

    def column(
        self, shape: tuple[int, ...], index: int, yx: tuple[int, int] | None = None
    ) -> int | None:
        """The one stored column that is exactly channel ``index`` (at ``yx``), or None.

        For an NC layer the unit itself; for a spatial/token layer the ``mean`` part's
        column, or with ``yx`` the ``full`` part's column of that position (or a grid
        cell of one position). None where the unit is no single stored value.
        """
        layout = self._layout(shape)
        if layout.kind in ("NC", "other"):
            return index if yx is None and self.parts[0].kind == "full" else None
        found = self._locate(layout, shape, index, yx)
        if isinstance(found, UnitColumns) and found.exact and len(found.columns) == 1:
            return int(found.columns[0])
        return None

    def _locate(
        self, layout: Layout, shape: tuple[int, ...], c: int, yx: tuple[int, int] | None
    ) -> UnitColumns | str:
        """The columns of channel ``c`` (at ``yx``) of a spatial/token layer, or why none.

        The reason is a template with ``{layer}`` and ``{c}`` left to fill.
        """
        offsets, offset = {}, 0
        for part in self.parts:
            offsets[part.kind] = (part, offset)
            offset += part.dim(layout, shape)
        order = ("full", "grid") if yx is not None else ("mean", "full", "grid", "tokens")
        for kind in order:
            if kind in offsets:
                part, start = offsets[kind]
                return _PART_COLUMNS[kind](part, layout, shape, c, yx, start)
        if yx is not None and "mean" in offsets:
            return (
                "the store keeps only channel means of {layer}; use {layer}:{c}, "
                "or collect again with --reduce {layer}=grid:S or full"
            )
        what = "positions" if yx is not None else "channel values"
        return (
            f"the store keeps no {what} of {{layer}} ({self}); "
            "collect again with --reduce {layer}=mean, grid:S or full"
        )

    def column_name(self, layer: str, shape: tuple[int, ...], column: int) -> str:
        """A person's name for column ``column`` of a reduced row (inverse of unit_columns).

        ``fc7:12``; ``conv5_3:12`` (a channel mean); ``conv5_3:12@3,4`` (a position of a
        ``full`` layer, whatever its layout); ``conv5_3:12 cell 1,0/2x2`` (a ``grid:S``
        cell); ``blocks.3:12 token 0`` (a leading or ungridded token);
        ``blocks.3:12 segment 1/4`` (a ``tokens:S`` segment).
        """
        layout = self._layout(shape)
        if layout.kind in ("NC", "other"):
            return f"{layer}:{column}"
        n_c = layout.channels(shape)
        for part in self.parts:
            size = part.dim(layout, shape)
            if column >= size:
                column -= size
                continue
            if part.kind == "mean":
                return f"{layer}:{column}"
            if part.kind == "full":
                c, where = _full_position(layout, shape, column)
                return f"{layer}:{c}{where}"
            if part.kind == "grid":
                s = part.size
                c, rest = divmod(column, s * s)
                return f"{layer}:{c} cell {rest // s},{rest % s}/{s}x{s}"
            if part.kind == "cls":
                t, c = divmod(column, n_c)
                return f"{layer}:{c} token {t}"
            c, seg = divmod(column, part.size)
            return f"{layer}:{c} segment {seg}/{part.size}"
        raise ActstatsError(f"{layer}: column out of range for reduction {self}")

    def __call__(self, acts: torch.Tensor) -> torch.Tensor:
        """(N, ...) activations -> (N, D) rows, differentiably, on the activations' device."""
        layout = self.layout or infer_layout(acts)
        rows = [p(acts, layout) for p in self.parts]
        return rows[0] if len(rows) == 1 else torch.cat(rows, dim=1)


def _check_index(layer: str, index: int, n: int) -> None:
    if not 0 <= index < n:
        raise ActstatsError(f"--neuron {layer}:{index}: index out of range; {layer} has 0..{n - 1}")


def _at(yx: tuple[int, int] | None) -> str:
    return "" if yx is None else f"@{yx[0]},{yx[1]}"


def _cell(i: int, size: int, s: int) -> tuple[int, int]:
    """Half-open span of adaptive-pooling cell ``i`` of ``s`` over ``size`` positions."""
    return (i * size) // s, math.ceil((i + 1) * size / s)


def _full_position(layout: Layout, shape: tuple[int, ...], column: int) -> tuple[int, str]:
    """(channel, ``@y,x`` or `` token t``) of column ``column`` of a ``full`` part."""
    if layout.kind == "NCHW":
        c, rest = divmod(column, shape[1] * shape[2])
        return c, f"@{rest // shape[2]},{rest % shape[2]}"
    if layout.kind == "NHWC":
        rest, c = divmod(column, shape[2])
        return c, f"@{rest // shape[1]},{rest % shape[1]}"
    token, c = divmod(column, shape[-1])
    if layout.grid is None or token < layout.prefix:
        return c, f" token {token}"
    y, x = divmod(token - layout.prefix, layout.grid[1])
    return c, f"@{y},{x}"


def _full_columns(
    part: Part,
    layout: Layout,
    shape: tuple[int, ...],
    c: int,
    yx: tuple[int, int] | None,
    start: int,
) -> UnitColumns:
    grid = layout.grid_shape(shape)
    if yx is not None:
        y, x = yx
        col = start + _full_index(layout, shape, c, yx)
        return UnitColumns(np.array([col]), (y, y + 1, x, x + 1), True, f"channel {c} at {y},{x}")
    if grid is None:  # a token sequence without a grid: every token after the leading ones
        n = _n_tokens(layout, shape)
        cols = start + (layout.prefix + np.arange(n)) * shape[-1] + c
        return UnitColumns(cols, None, True, f"channel {c}, mean of {n} tokens")
    h, w = grid
    cols = [start + _full_index(layout, shape, c, (y, x)) for y in range(h) for x in range(w)]
    return UnitColumns(np.array(cols), None, True, f"channel {c}, mean of {h}x{w}")


def _mean_columns(
    part: Part,
    layout: Layout,
    shape: tuple[int, ...],
    c: int,
    yx: tuple[int, int] | None,
    start: int,
) -> UnitColumns:
    return UnitColumns(np.array([start + c]), None, True, f"channel {c}, spatial mean")


def _grid_columns(
    part: Part,
    layout: Layout,
    shape: tuple[int, ...],
    c: int,
    yx: tuple[int, int] | None,
    start: int,
) -> UnitColumns:
    h, w = layout.grid_shape(shape)
    s = part.size
    if yx is None:
        even = h % s == 0 and w % s == 0
        desc = f"channel {c}, mean of the stored {s}x{s} grid"
        return UnitColumns(start + c * s * s + np.arange(s * s), None, even, desc)
    i = next(i for i in range(s) if _cell(i, h, s)[0] <= yx[0] < _cell(i, h, s)[1])
    j = next(j for j in range(s) if _cell(j, w, s)[0] <= yx[1] < _cell(j, w, s)[1])
    (y0, y1), (x0, x1) = _cell(i, h, s), _cell(j, w, s)
    exact = (y1 - y0) * (x1 - x0) == 1
    desc = (
        f"channel {c}, grid cell {i},{j} of {s}x{s} (positions y {y0}..{y1 - 1}, x {x0}..{x1 - 1})"
    )
    col = start + c * s * s + i * s + j
    return UnitColumns(np.array([col]), (y0, y1, x0, x1), exact, desc)


def _tokens_columns(
    part: Part,
    layout: Layout,
    shape: tuple[int, ...],
    c: int,
    yx: tuple[int, int] | None,
    start: int,
) -> UnitColumns:
    s = part.size
    even = _n_tokens(layout, shape) % s == 0
    desc = f"channel {c}, mean of the stored {s} token segments"
    return UnitColumns(start + c * s + np.arange(s), None, even, desc)


_PART_COLUMNS = {
    "full": _full_columns,
    "mean": _mean_columns,
    "grid": _grid_columns,
    "tokens": _tokens_columns,
}


def _full_index(layout: Layout, shape: tuple[int, ...], c: int, yx: tuple[int, int]) -> int:
    y, x = yx
    if layout.kind == "NCHW":
        return (c * shape[1] + y) * shape[2] + x
    if layout.kind == "NHWC":
        return (y * shape[1] + x) * shape[2] + c
    w = layout.grid[1] if layout.grid else 0
    return (layout.prefix + y * w + x) * shape[-1] + c


def unit_value(
    x: torch.Tensor, index: int, yx: tuple[int, int] | None = None, layout: Layout | None = None
) -> torch.Tensor:
    """One unit per image, differentiably: an NC unit ``x[:, index]``, else channel ``index``
    averaged over space / patch tokens, or its value at grid position ``yx``."""
    layout = layout or infer_layout(x)
    if layout.kind == "NC":
        return x[:, index]
    if yx is None:
        return _mean(x, layout)[:, index]
    return channels_first(x, layout)[:, index, yx[0], yx[1]]


def parse_reduction(text: str, layout: Layout | str | None = None) -> Reduction:
    """``"full"``, ``"mean"``, ``"grid:S"``, ``"cls"``, ``"tokens:S"`` or ``"cls+grid:2"``."""
    parts = []
    for item in str(text).strip().split("+"):
        match = _PART_RE.match(item.strip())
        size = int(match[2] or match[3] or 0) if match else 0
        if not match or (match[1][:4] in ("grid", "toke") and size < 1):
            raise ActstatsError(f"--reduce {text!r}: use {_SYNTAX}")
        parts.append(Part(match[1].split(":")[0], size))
    if len(set(parts)) != len(parts):
        raise ActstatsError(f"--reduce {text!r}: a part is repeated")
    if isinstance(layout, str):
        from actstats.net.layout import parse_layout

        layout = parse_layout(layout)
    return Reduction(tuple(parts), layout)


def stored_reduction(entry: dict) -> Reduction:
    """The reduction of a store's or model file's ``layers`` entry, with its layout.

    Entries written before layouts were recorded have none: their layout follows
    from the shape as it always did (3 axes NCHW, else a vector).
    """
    layout = entry.get("layout")
    if layout is None:
        shape = entry.get("shape") or []
        layout = "NCHW" if len(shape) == 3 else "NC"
    return parse_reduction(str(entry.get("reduce", entry.get("reduction", "full"))), layout)


def default_reduction(
    shape: tuple[int, ...], layout: Layout, max_values: int = DEFAULT_MAX_VALUES
) -> Reduction | None:
    """The reduction a layer gets when none is named; None when nothing fits the budget.

    Spatial layers: ``grid:2`` (a coarse picture of where things are), else
    ``mean``; ViT-style token layers add the class token (``cls+grid:2``); token
    layers without a grid pool the sequence (``tokens:4``); vectors are stored
    ``full``. The first candidate of at most ``max_values`` values per image wins.
    """
    lead = ("cls+",) if layout.kind == "NTC" and layout.prefix else ("",)
    if layout.kind in ("NC", "other"):
        candidates = ["full"]
    elif layout.spatial:
        candidates = [f"{p}grid:2" for p in lead] + [f"{p}mean" for p in lead] + ["mean"]
    else:
        candidates = [f"{p}tokens:4" for p in lead] + [f"{p}mean" for p in lead] + ["mean"]
    for text in candidates:
        r = parse_reduction(text, layout)
        if all(p.applies(layout, shape) is None for p in r.parts) and r.dim(shape) <= max_values:
            return r
    return None


def parse_reduce_options(items: list[str] | None) -> dict[str, str]:
    """Repeated ``--reduce LAYER=REDUCTION`` flags -> ``{layer: reduction}``."""
    out: dict[str, str] = {}
    for item in items or []:
        layer, sep, value = item.partition("=")
        if not sep or not layer.strip():
            raise ActstatsError(
                f"--reduce {item!r}: expected LAYER=REDUCTION (e.g. conv4_3=grid:2); "
                f"REDUCTION is {_SYNTAX}"
            )
        out[layer.strip()] = str(parse_reduction(value))
    return out
