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

import re
from dataclasses import dataclass

import torch
from torch.nn.functional import adaptive_avg_pool1d, adaptive_avg_pool2d

from actstats.errors import ActstatsError
from actstats.net.layout import Layout

__all__ = [
    "DEFAULT_MAX_VALUES",
    "Reduction",
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

    def __call__(self, acts: torch.Tensor) -> torch.Tensor:
        """(N, ...) activations -> (N, D) rows, differentiably, on the activations' device."""
        layout = self.layout or infer_layout(acts)
        rows = [p(acts, layout) for p in self.parts]
        return rows[0] if len(rows) == 1 else torch.cat(rows, dim=1)

    def column(
        self, shape: tuple[int, ...], index: int, yx: tuple[int, int] | None = None
    ) -> int | None:
        """The stored column of channel ``index`` (its mean, or its value at ``yx``), or None.

        For an NC layer the unit itself; for a spatial/token layer the ``mean`` part's
        column, or with ``yx`` the ``full`` part's column of that position.
        """
        layout = self._layout(shape)
        offset = 0
        for part in self.parts:
            if part.kind == "full":
                if layout.kind == "NC":
                    return offset + index
                if yx is not None:
                    return offset + _full_index(layout, shape, index, yx)
            elif part.kind == "mean" and yx is None:
                return offset + index
            offset += part.dim(layout, shape)
        return None


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
