"""Where in the frame is the class? A window search by the network's own class score.

A classifier trained on centred, frame-filling objects recognises an object that fills
a small part of a cluttered frame poorly, and its saliency map over the whole frame
then spreads over the clutter (digits pasted onto photographs: 18 % recognised,
saliency mass inside the object's box barely above its area share). Classifying
crops instead -- every square window of several sides on a grid, resized to the
network's input -- ranks the windows by how well the network sees the class there
(detection by classification). Saliency computed on the best crops, where the network
does see the object, mapped back into the frame and weighted by the windows' class
probabilities, seeds the segmentation (:func:`actstats.explain.localize.localize_in_windows`):
one window's map is as blotchy as any gradient map; several overlapping windows agree
on the object and disagree on the clutter. The map is input x gradient by default:
on the digits benchmark's validation scenes |gradient| seeds gave boxes 4.4 px too wide
on average (3.3 px with input x gradient) and a mean IoU of 0.66 against 0.72.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.nn import functional

from actstats.errors import ActstatsError
from actstats.explain.localize import Localization, localize_in_windows
from actstats.explain.saliency import saliency_map
from actstats.net.network import Network, ResolvedNeuron
from actstats.net.reduce import unit_value

__all__ = ["crop_window", "localize_by_search", "ranked_windows", "square_windows"]

Box = tuple[int, int, int, int]


def square_windows(height: int, width: int, sides: Sequence[int], stride: int) -> list[Box]:
    """Every ``(x0, y0, x1, y1)`` square of each side in ``sides`` on a ``stride`` grid."""
    return [
        (x, y, x + s, y + s)
        for s in sides
        if s <= min(height, width)
        for y in range(0, height - s + 1, stride)
        for x in range(0, width - s + 1, stride)
    ]


def crop_window(inputs: torch.Tensor, window: Box) -> torch.Tensor:
    """The window of network inputs (1, 3, H, W), resized back to (1, 3, H, W)."""
    x0, y0, x1, y1 = window
    return functional.interpolate(
        inputs[:, :, y0:y1, x0:x1], size=inputs.shape[2:], mode="bilinear", align_corners=False
    )


def ranked_windows(
    network: Network,
    inputs: torch.Tensor,
    neuron: ResolvedNeuron,
    *,
    min_side: float = 0.35,
    stride: int | None = None,
    batch_size: int = 256,
) -> list[tuple[Box, float]]:
    """Every square window and the score its crop gives ``neuron``, best first.

    ``inputs`` is one image's network inputs (1, 3, H, W); windows have sides from
    ``min_side`` of the shorter side up to the whole frame, in steps of ``stride`` pixels,
    on a ``stride`` grid (default: 1/16 of the shorter side, at least 2 pixels, so a
    224-pixel image has ~600 windows and a 32-pixel one ~2,000). A unit of a 2-D layer
    (a logit) is scored by its log-softmax over the layer (the class log-probability), so
    a crop where every class scores high does not win; a conv unit by its value.
    """
    h, w = inputs.shape[2:]
    step = stride if stride is not None else max(2, min(h, w) // 16)
    if step < 1 or not 0.0 < min_side <= 1.0:
        raise ActstatsError(f"window search stride {step}, min_side {min_side}: need >= 1, (0, 1]")
    sides = range(max(2, round(min_side * min(h, w))), min(h, w) + 1, step)
    windows = square_windows(h, w, sides, step)
    scores = []
    with torch.inference_mode():
        for start in range(0, len(windows), batch_size):
            crops = torch.cat([crop_window(inputs, b) for b in windows[start : start + batch_size]])
            acts = network.activations(crops.to(network.device), [neuron.layer])[neuron.layer]
            out = (
                torch.log_softmax(acts, 1)[:, neuron.index]
                if acts.ndim == 2
                else unit_value(acts, neuron.index, neuron.yx, neuron.layout)
            )
            scores.append(out.float().cpu())
    score = torch.cat(scores).numpy()
    order = np.argsort(-score, kind="stable")
    return [(windows[i], float(score[i])) for i in order]


def localize_by_search(
    network: Network,
    inputs: torch.Tensor,
    image: np.ndarray,
    neuron: ResolvedNeuron,
    *,
    windows: int = 20,
    kind: str = "input-gradient",
    foreground: float = 0.95,
    smoothgrad: int = 0,
    min_side: float = 0.35,
    stride: int | None = None,
) -> Localization:
    """Box the object by the ``windows`` best crops' saliency, then the GraphCut.

    ``image`` is the (H, W, 3) picture in [0, 1] that ``inputs`` (1, 3, H, W) encode.
    Each of the best ``windows`` crops gets its own saliency map of ``kind``
    (:data:`~actstats.explain.saliency.SALIENCY_KINDS`), scaled to unit mean and weighted
    by ``exp(score - best score)`` (for a logit, the crop's class probability relative
    to the best crop's); the top ``1 - foreground`` of the sum are foreground seeds.
    ``min_side`` and ``stride`` set the grid of :func:`ranked_windows`. The defaults
    (20 windows, input x gradient, 0.95) were chosen on the digits benchmark's
    validation scenes (``benchmarks/localization.py --split validation``).
    """
    if windows < 1:
        raise ActstatsError(f"--windows {windows}: must be >= 1 (the best crops to combine)")
    ranked = ranked_windows(network, inputs, neuron, min_side=min_side, stride=stride)[:windows]
    crops = torch.cat([crop_window(inputs, box) for box, _ in ranked])
    maps = list(saliency_map(network, crops, neuron, smoothgrad=smoothgrad, kind=kind).numpy())
    best = ranked[0][1]
    weights = [float(np.exp(score - best)) for _, score in ranked]
    boxes = [box for box, _ in ranked]
    return localize_in_windows(image, maps, boxes, weights, foreground=foreground)
