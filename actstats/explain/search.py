"""Where in the frame is the class? A window search by the network's own class score.

A classifier trained on centred, frame-filling objects recognises an object that fills
a small part of a cluttered frame poorly, and its saliency map over the whole frame
then spreads over the clutter (digits pasted onto photographs: 18 % recognised,
saliency mass inside the object's box barely above its area share). Classifying
crops instead -- every square window of several sides on a grid, resized to the
network's input -- finds the window where the network sees the class best
(detection by classification); saliency computed on that crop, where the network
does see the object, seeds the segmentation (:func:`actstats.explain.localize.localize_in_window`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.nn import functional

from actstats.net.network import Network, ResolvedNeuron
from actstats.synth.objectives import unit_value

__all__ = ["best_window", "crop_window", "square_windows"]

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


def best_window(
    network: Network,
    inputs: torch.Tensor,
    neuron: ResolvedNeuron,
    *,
    min_side: float = 0.35,
    stride: int = 2,
    batch_size: int = 256,
) -> Box:
    """The square window whose crop gives ``neuron`` its highest value.

    ``inputs`` is one image's network inputs (1, 3, H, W); windows have sides from
    ``min_side`` of the shorter side up to the whole frame, every 2 pixels, on a
    ``stride`` grid. A unit of a 2-D layer (a logit) is compared by its log-softmax
    over the layer (the class log-probability), so a crop where every class scores
    high does not win; a conv unit by its value.
    """
    h, w = inputs.shape[2:]
    sides = range(max(2, round(min_side * min(h, w))), min(h, w) + 1, 2)
    windows = square_windows(h, w, sides, stride)
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
            scores.append(out.cpu())
    return windows[int(torch.cat(scores).argmax())]
