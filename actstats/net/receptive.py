"""Which input pixels a conv position sees: the receptive field of a layer.

For a chain of convolutions and poolings the field follows the usual recurrence
(Araujo et al., "Computing receptive fields of convolutional neural networks",
Distill 2019): with jump ``j`` (input pixels between neighbouring positions),
size ``r`` and centre ``c`` of position 0, a layer of kernel ``k``, stride ``s``,
padding ``p`` and dilation ``d`` gives ``r += (d (k - 1)) j``, ``c += ((d (k - 1)) / 2 - p) j``,
``j *= s``. Networks that branch (ResNets) are not a chain; there
:func:`receptive_field` returns None and callers fall back to the position's share
of the image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from actstats.net.network import Network

__all__ = ["ReceptiveField", "input_box", "receptive_field"]

_GEOMETRIC = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)


@dataclass(frozen=True)
class ReceptiveField:
    """Size ``size``, jump ``jump`` and centre ``start`` of position 0, in input pixels."""

    size: int
    jump: int
    start: float


def _pair(v: Any) -> int:
    if isinstance(v, (tuple, list)):
        if len(set(v)) != 1:
            raise ValueError("non-square kernel")
        return int(v[0])
    return int(v)


def _out_size(n: int, k: int, s: int, p: int, d: int, ceil: bool) -> int:
    span = n + 2 * p - d * (k - 1) - 1
    return (math.ceil(span / s) if ceil else span // s) + 1


def _leaf_trace(network: Network, layer: str) -> list[tuple[nn.Module, int, int]]:
    """Leaf modules run up to and including ``layer``'s, with input and output heights."""
    target = network.module_name(layer)
    trace: list[tuple[str, nn.Module, int, int]] = []
    handles = []
    for name, mod in network.module.named_modules():
        if name and not list(mod.children()):

            def hook(m: nn.Module, inp: Any, out: Any, name: str = name) -> None:
                if isinstance(inp[0], torch.Tensor) and isinstance(out, torch.Tensor):
                    h_in = inp[0].shape[-2] if inp[0].dim() == 4 else -1
                    h_out = out.shape[-2] if out.dim() == 4 else -1
                    trace.append((name, m, h_in, h_out))

            handles.append(mod.register_forward_hook(hook))
    size = network.preprocessing.crop
    try:
        with torch.inference_mode():
            network.activations(torch.zeros(1, 3, size, size, device=network.device), [layer])
    finally:
        for h in handles:
            h.remove()
    names = [t[0] for t in trace]
    if target in names:
        trace = trace[: names.index(target) + 1]
    return [(m, h_in, h_out) for _, m, h_in, h_out in trace]


def receptive_field(network: Network, layer: str) -> ReceptiveField | None:
    """The receptive field of one position of conv ``layer``; None where the net is no chain.

    Runs one zero image (batch 1) through the network to see the order of its
    modules; reads no data.
    """
    size, jump, start = 1, 1, 0.0
    height = network.preprocessing.crop
    try:
        for module, h_in, h_out in _leaf_trace(network, layer):
            if h_in != h_out and not isinstance(module, _GEOMETRIC):
                return None  # a resize this recurrence does not model
            if not isinstance(module, _GEOMETRIC):
                continue
            k, s, p = _pair(module.kernel_size), _pair(module.stride), _pair(module.padding)
            d = _pair(getattr(module, "dilation", 1))
            ceil = bool(getattr(module, "ceil_mode", False))
            if h_in != height or _out_size(h_in, k, s, p, d, ceil) != h_out:
                return None  # a branch: this module does not continue the chain
            size += d * (k - 1) * jump
            start += (d * (k - 1) / 2 - p) * jump
            jump *= s
            height = h_out
    except ValueError:
        return None
    return ReceptiveField(size, jump, start)


def input_box(
    region: tuple[int, int, int, int],
    layer_hw: tuple[int, int],
    input_size: int,
    field: ReceptiveField | None,
) -> tuple[int, int, int, int]:
    """Half-open ``(x0, y0, x1, y1)`` input pixels seen by the layer block ``(y0, y1, x0, x1)``.

    With a receptive field: the union of its positions' fields, clipped to the
    image. Without one: the block's share of the image (``input_size / H`` per row).
    """
    y0, y1, x0, x1 = region
    if field is None:
        sy, sx = input_size / layer_hw[0], input_size / layer_hw[1]
        return (
            int(x0 * sx),
            int(y0 * sy),
            math.ceil(x1 * sx),
            math.ceil(y1 * sy),
        )
    half = (field.size - 1) / 2

    def span(a: int, b: int) -> tuple[int, int]:
        lo = math.floor(field.start + a * field.jump - half)
        hi = math.ceil(field.start + (b - 1) * field.jump + half) + 1
        return max(0, lo), min(input_size, hi)

    (top, bottom), (left, right) = span(y0, y1), span(x0, x1)
    return (left, top, right, bottom)
