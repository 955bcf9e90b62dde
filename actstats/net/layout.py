"""What the axes of a layer's output mean: channels first, channels last, or tokens.

A reduction such as "the spatial mean of each channel" is only right when it knows
which axis holds the channels. torchvision's classifiers use four layouts:

``NCHW``
    channels first, a spatial grid (every CNN; ConvNeXt and MaxViT between blocks).
``NHWC``
    channels last, a spatial grid (Swin stages; the MLP inside a ConvNeXt block).
``NTC:P+HxW``
    a token sequence (N, T, C): ``P`` leading tokens kept apart (ViT's class token)
    followed by ``H*W`` patch tokens in raster order. ``NTC`` alone is a sequence
    without a known grid; a 4-D channels-last tensor without a grid (MaxViT's window
    partitions (N, G, P, C)) is also ``NTC``: its middle axes are the tokens.
``NC``
    a vector per image (fc layers, logits).

:func:`detect_layouts` finds each module's layout in one forward pass. Where the
module type says it (a convolution is NCHW, a Swin block NHWC, a ``Permute``
moves the channel axis) that decides; otherwise the layout follows the graph --
a module that keeps its input's leading axes (activations, dropout, ``Linear`` and
``LayerNorm`` on the last axis) keeps its input's layout, a container returns its
last child's tensor -- and only a tensor with no known producer falls back to a
shape check (:func:`layout_from_shape`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from actstats.errors import ActstatsError

__all__ = ["Layout", "detect_layouts", "layout_from_shape", "parse_layout"]

_KINDS = ("NCHW", "NHWC", "NTC", "NC", "other")
_NTC_RE = re.compile(r"^NTC(?::(\d+)\+(\d+)x(\d+))?$")
#: Most leading (class, distillation, register) tokens the shape check accepts.
_MAX_PREFIX = 8


@dataclass(frozen=True)
class Layout:
    """The meaning of a layer's axes; ``str(layout)`` is the form stored in attrs.

    ``prefix`` and ``grid`` only apply to ``NTC``: the number of leading tokens
    kept apart (1 for ViT's class token) and the patch tokens' (H, W) grid, when
    known.
    """

    kind: str
    prefix: int = 0
    grid: tuple[int, int] | None = None

    def __str__(self) -> str:
        if self.kind == "NTC" and self.grid is not None:
            return f"NTC:{self.prefix}+{self.grid[0]}x{self.grid[1]}"
        return self.kind

    @property
    def spatial(self) -> bool:
        """True when the layer has a spatial grid (``grid:S`` and ``@y,x`` apply)."""
        return self.kind in ("NCHW", "NHWC") or self.grid is not None

    def channels(self, shape: tuple[int, ...]) -> int:
        """Number of channels (units per position) of one image's ``shape``."""
        if self.kind == "NCHW":
            return shape[0]
        if self.kind == "other":
            raise ActstatsError(f"layout {self}: no channel axis is known")
        return shape[-1]

    def grid_shape(self, shape: tuple[int, ...]) -> tuple[int, int] | None:
        """(H, W) of the spatial grid of one image's ``shape``, or None."""
        if self.kind == "NCHW":
            return shape[1], shape[2]
        if self.kind == "NHWC":
            return shape[0], shape[1]
        return self.grid


def parse_layout(text: str) -> Layout:
    """``"NCHW"``, ``"NHWC"``, ``"NTC"``, ``"NTC:1+14x14"``, ``"NC"`` or ``"other"``."""
    match = _NTC_RE.match(text.strip())
    if match:
        if match[1] is None:
            return Layout("NTC")
        return Layout("NTC", int(match[1]), (int(match[2]), int(match[3])))
    if text.strip() in _KINDS:
        return Layout(text.strip())
    raise ActstatsError(f"layout {text!r}: use NCHW, NHWC, NTC, NTC:P+HxW, NC or other")


def layout_from_shape(
    shape: tuple[int, ...], grids: list[tuple[int, int]] | tuple[()] = ()
) -> Layout:
    """Guess a layout from one image's shape alone (the fallback of :func:`detect_layouts`).

    3 axes: NHWC when the first two are equal and the last differs (a square
    image's grid before its channels), else NCHW. 2 axes: a token sequence; its
    grid is the most recent spatial grid of the forward pass (``grids``) whose
    size leaves at most a few leading tokens, else a square number of tokens
    after 0 or 1 leading token.
    """
    if len(shape) == 1:
        return Layout("NC")
    if len(shape) == 3:
        a, b, c = shape
        return Layout("NHWC") if a == b and c != a else Layout("NCHW")
    if len(shape) == 2:
        t = shape[0]
        for h, w in reversed(list(grids)):
            if 0 <= t - h * w <= _MAX_PREFIX:
                return Layout("NTC", t - h * w, (h, w))
        for p in (0, 1):
            side = math.isqrt(max(t - p, 0))
            if side > 1 and side * side == t - p:
                return Layout("NTC", p, (side, side))
        return Layout("NTC")
    return Layout("other")


# ------------------------------------------------------------------ detection
def _tv(module: str, name: str) -> type | None:
    """A torchvision class by module and name (None where this version lacks it)."""
    import importlib

    try:
        return getattr(importlib.import_module(f"torchvision.{module}"), name)
    except (ImportError, AttributeError):
        return None


def _typed_rules() -> list[tuple[type, Callable[[nn.Module, Layout | None], Layout | None]]]:
    """(module type, rule) pairs: the layout a module's type fixes, given its input's."""
    nchw = (
        nn.Conv1d,
        nn.Conv2d,
        nn.ConvTranspose2d,
        nn.BatchNorm2d,
        nn.MaxPool2d,
        nn.AvgPool2d,
        nn.AdaptiveAvgPool2d,
        nn.AdaptiveMaxPool2d,
        nn.GroupNorm,
        nn.InstanceNorm2d,
        nn.LocalResponseNorm,
    )
    rules: list[tuple[type, Callable[[nn.Module, Layout | None], Layout | None]]] = [
        (t, lambda _m, _i: Layout("NCHW")) for t in nchw
    ]
    for mod, name in (("models.convnext", "LayerNorm2d"), ("models.maxvit", "WindowDepartition")):
        t = _tv(mod, name)
        if t is not None:
            rules.insert(0, (t, lambda _m, _i: Layout("NCHW")))
    for name in (
        "SwinTransformerBlock",
        "SwinTransformerBlockV2",
        "PatchMerging",
        "PatchMergingV2",
        "ShiftedWindowAttention",
        "ShiftedWindowAttentionV2",
    ):
        t = _tv("models.swin_transformer", name)
        if t is not None:
            rules.append((t, lambda _m, _i: Layout("NHWC")))
    for name in ("WindowPartition", "SwapAxes", "RelativePositionalMultiHeadAttention"):
        t = _tv("models.maxvit", name)
        if t is not None:
            rules.append((t, lambda _m, _i: Layout("NTC")))
    permute = _tv("ops.misc", "Permute")
    if permute is not None:
        rules.append((permute, _permute_rule))
    return rules


def _permute_rule(module: nn.Module, inp: Layout | None) -> Layout | None:
    dims = list(getattr(module, "dims", []))
    if dims == [0, 2, 3, 1] and inp in (None, Layout("NCHW")):
        return Layout("NHWC")
    if dims == [0, 3, 1, 2] and inp in (None, Layout("NHWC")):
        return Layout("NCHW")
    return None


def _context_types() -> tuple[type, ...]:
    """Modules inside which a channels-last tensor of unknown producer is a window of tokens."""
    found = [_tv("models.maxvit", "PartitionAttentionLayer")]
    return tuple(t for t in found if t is not None)


class _Tracker:
    """Forward hooks that label every module's output tensor with a layout."""

    def __init__(self, model: nn.Module, batch: int) -> None:
        self.batch = batch
        self.rules = _typed_rules()
        self.windows = _context_types()
        self.stack: list[nn.Module] = []
        self.by_tensor: dict[int, Layout] = {}
        self.keep: list[torch.Tensor] = []  # ids stay unique while the tensors live
        self.grids: list[tuple[int, int]] = []
        self.out: dict[str, tuple[tuple[int, ...], Layout]] = {}
        self.order: list[str] = []
        self.names = {id(m): n for n, m in model.named_modules() if n}

    def enter(self, module: nn.Module, _inputs: tuple[Any, ...]) -> None:
        self.stack.append(module)

    def hook(self, module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        if self.stack and self.stack[-1] is module:
            self.stack.pop()
        name = self.names.get(id(module))
        if name is None or not isinstance(output, torch.Tensor) or output.dim() < 2:
            return
        if output.shape[0] != self.batch:  # rows are not images (windows folded into N)
            return
        layout = self._layout(module, inputs, output)
        self.by_tensor[id(output)] = layout
        self.keep.append(output)
        shape = tuple(output.shape[1:])
        grid = layout.grid_shape(shape) if layout.spatial else None
        if grid is not None:
            self.grids.append(grid)
        self.out[name] = (shape, layout)
        self.order.append(name)

    def _layout(self, module: nn.Module, inputs: tuple[Any, ...], output: torch.Tensor) -> Layout:
        first = next((t for t in inputs if isinstance(t, torch.Tensor)), None)
        inp = self.by_tensor.get(id(first)) if first is not None else None
        for cls, rule in self.rules:
            if isinstance(module, cls):
                found = rule(module, inp)
                if found is not None:
                    return found
                break
        if id(output) in self.by_tensor:  # a container returning its last child's tensor
            return self.by_tensor[id(output)]
        if output.dim() == 2:
            return Layout("NC")
        if inp is not None and first is not None and first.dim() == output.dim():
            same_lead = tuple(first.shape[:-1]) == tuple(output.shape[:-1])
            if tuple(first.shape) == tuple(output.shape) or (
                same_lead and inp.kind in ("NHWC", "NTC")
            ):
                return inp  # elementwise, or Linear/LayerNorm over the channel axis
        shape = tuple(output.shape[1:])
        if output.dim() == 4 and inp is not None and inp.kind == "NTC" and inp.grid is None:
            return Layout("NTC")  # still a window partition
        if output.dim() == 4 and any(isinstance(m, self.windows) for m in self.stack):
            return Layout("NTC")
        return layout_from_shape(shape, self.grids)


def detect_layouts(
    model: nn.Module, inputs: torch.Tensor
) -> dict[str, tuple[tuple[int, ...], Layout]]:
    """Every module's output shape (one image) and :class:`Layout`, in forward order.

    One forward pass of ``inputs`` (two images tell the batch axis from windows
    folded into it; meta tensors work where the model allows them) with a hook on
    every named module. A module whose output is not a tensor (attention
    returning a tuple), or whose first axis is not the batch, is left out.
    """
    tracker = _Tracker(model, inputs.shape[0])
    modules = [m for n, m in model.named_modules() if n]
    handles = [m.register_forward_pre_hook(tracker.enter) for m in modules]
    handles += [m.register_forward_hook(tracker.hook) for m in modules]
    try:
        with torch.inference_mode():
            model(inputs)
    finally:
        for h in handles:
            h.remove()
    return {name: tracker.out[name] for name in dict.fromkeys(tracker.order)}
