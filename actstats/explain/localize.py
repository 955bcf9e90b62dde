"""Weakly supervised object localization from a saliency map (Simonyan et al. 2014, sec. 3.1).

The saliency map marks the pixels the class score depends on, but it is sparse
and blotchy: it finds the discriminative parts, not the object's extent. A
colour segmentation propagates it to the whole object:

1. seeds: pixels above the 95 % quantile of saliency are foreground, pixels
   below the 30 % quantile background;
2. a Gaussian mixture on RGB per side gives every pixel a data cost
   ``-log p(colour | side)``; the seeds are hard constraints;
3. a GraphCut (Boykov & Jolly 2001, max-flow by PyMaxflow) over the 4-connected
   pixel grid with contrast-sensitive edge weights ``gamma * exp(-beta ||I_p -
   I_q||^2)`` finds the cheapest labelling, so boundaries fall on colour edges;
4. the box is the bounding box of the largest connected foreground component.

Pure arrays in, arrays out: no files, no network.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import maxflow
import numpy as np
from scipy import ndimage
from sklearn.mixture import GaussianMixture

from actstats.errors import ActstatsError

__all__ = ["Localization", "graphcut_segment", "localize", "localize_in_windows", "seed_masks"]

_RIGHT = np.array([[0, 0, 0], [0, 0, 1], [0, 0, 0]])
_DOWN = np.array([[0, 0, 0], [0, 0, 0], [0, 1, 0]])
_HARD = 1e9  # a capacity no cut pays: the seed keeps its label


@dataclass(frozen=True)
class Localization:
    """A segmentation and its box.

    ``box`` is ``(x0, y0, x1, y1)`` in pixels of the analysed image, half-open
    (``x1``/``y1`` exclusive); ``mask`` the largest component (H, W) bool;
    ``segmentation`` every foreground pixel of the cut; ``foreground_seeds`` and
    ``background_seeds`` the thresholded saliency.
    """

    box: tuple[int, int, int, int]
    mask: np.ndarray
    segmentation: np.ndarray
    foreground_seeds: np.ndarray
    background_seeds: np.ndarray

    def to_json(self) -> dict[str, object]:
        """The box and sizes, JSON-ready."""
        x0, y0, x1, y1 = self.box
        return {
            "box": {"x0": x0, "y0": y0, "x1": x1, "y1": y1},
            "image_size": {"height": int(self.mask.shape[0]), "width": int(self.mask.shape[1])},
            "mask_pixels": int(self.mask.sum()),
            "foreground_seeds": int(self.foreground_seeds.sum()),
            "background_seeds": int(self.background_seeds.sum()),
        }


def seed_masks(
    saliency: np.ndarray, foreground: float = 0.95, background: float = 0.30
) -> tuple[np.ndarray, np.ndarray]:
    """Foreground seeds ``saliency >= q(foreground)``, background ``saliency <= q(background)``."""
    if not 0.0 <= background < foreground <= 1.0:
        raise ActstatsError(
            f"seed quantiles background={background}, foreground={foreground}: "
            "need 0 <= background < foreground <= 1"
        )
    hi, lo = np.quantile(saliency, [foreground, background])
    fg = saliency >= hi
    bg = (saliency <= lo) & ~fg
    if not fg.any() or not bg.any():
        raise ActstatsError(
            "saliency map is constant, so it gives no foreground/background seeds; "
            "check that the neuron depends on the image (try another --neuron)"
        )
    return fg, bg


def _colour_cost(image: np.ndarray, seeds: np.ndarray, components: int, seed: int) -> np.ndarray:
    """``-log p(colour)`` of every pixel under a GMM fitted to the seed pixels' colours."""
    pixels = image[seeds].astype(np.float64)
    k = max(1, min(components, len(pixels) // 10))
    gmm = GaussianMixture(k, covariance_type="full", reg_covar=1e-3, random_state=seed)
    gmm.fit(pixels)
    return -gmm.score_samples(image.reshape(-1, image.shape[-1]).astype(np.float64)).reshape(
        image.shape[:2]
    )


def graphcut_segment(
    image: np.ndarray,
    fg_seeds: np.ndarray,
    bg_seeds: np.ndarray,
    *,
    gamma: float = 2.0,
    components: int = 1,
    seed: int = 0,
) -> np.ndarray:
    """Foreground mask (H, W) bool of the minimum cut with the seeds as hard constraints.

    ``image`` is (H, W, 3) in [0, 1]; ``gamma`` weighs the smoothness term
    against the colour data term (larger: fewer, smoother regions).
    """
    if image.ndim != 3 or image.shape[:2] != fg_seeds.shape:
        raise ActstatsError(
            f"image of shape {image.shape}: expected (H, W, 3) matching the saliency map "
            f"{fg_seeds.shape}"
        )
    cost_fg = _colour_cost(image, fg_seeds, components, seed)
    cost_bg = _colour_cost(image, bg_seeds, components, seed)
    base = np.minimum(cost_fg, cost_bg)
    cost_fg, cost_bg = cost_fg - base, cost_bg - base  # same cut, non-negative capacities
    cost_fg[fg_seeds], cost_bg[fg_seeds] = 0.0, _HARD
    cost_fg[bg_seeds], cost_bg[bg_seeds] = _HARD, 0.0

    img = image.astype(np.float64)
    d_right = np.zeros(img.shape[:2])
    d_down = np.zeros(img.shape[:2])
    d_right[:, :-1] = ((img[:, 1:] - img[:, :-1]) ** 2).sum(-1)
    d_down[:-1] = ((img[1:] - img[:-1]) ** 2).sum(-1)
    mean_sq = np.concatenate([d_right[:, :-1].ravel(), d_down[:-1].ravel()]).mean()
    beta = 1.0 / (2.0 * mean_sq) if mean_sq > 0 else 0.0

    graph = maxflow.Graph[float]()
    nodes = graph.add_grid_nodes(img.shape[:2])
    graph.add_grid_edges(
        nodes, weights=gamma * np.exp(-beta * d_right), structure=_RIGHT, symmetric=True
    )
    graph.add_grid_edges(
        nodes, weights=gamma * np.exp(-beta * d_down), structure=_DOWN, symmetric=True
    )
    # A pixel left on the source side is foreground and pays its sink capacity.
    graph.add_grid_tedges(nodes, cost_bg, cost_fg)
    graph.maxflow()
    return ~graph.get_grid_segments(nodes)


def localize(
    image: np.ndarray,
    saliency: np.ndarray,
    *,
    foreground: float = 0.95,
    background: float = 0.30,
    gamma: float = 2.0,
    components: int = 1,
    seed: int = 0,
) -> Localization:
    """Segment the object ``saliency`` points at and box its largest component.

    Parameters
    ----------
    image : array of shape (H, W, 3)
        RGB in [0, 1], the pixels the saliency map was computed on.
    saliency : array of shape (H, W)
        From :func:`actstats.explain.saliency.saliency_map`.
    foreground, background : float
        Seed quantiles of the saliency distribution (Simonyan et al.: 0.95, 0.30).
    gamma : float
        Smoothness weight of the GraphCut.
    components : int
        Gaussians per colour model (fewer when there are few seed pixels).
    """
    saliency = np.asarray(saliency, dtype=np.float64)
    if saliency.ndim != 2:
        raise ActstatsError(f"saliency of shape {saliency.shape}: expected one (H, W) map")
    fg, bg = seed_masks(saliency, foreground, background)
    segmentation = graphcut_segment(
        np.asarray(image), fg, bg, gamma=gamma, components=components, seed=seed
    )
    return _largest_box(segmentation, fg, bg)


def _largest_box(segmentation: np.ndarray, fg: np.ndarray, bg: np.ndarray) -> Localization:
    """The largest connected foreground component and its box."""
    labels, count = ndimage.label(segmentation)  # count >= 1: the seeds are hard constraints
    sizes = ndimage.sum_labels(np.ones_like(labels), labels, index=np.arange(1, count + 1))
    mask = labels == 1 + int(np.argmax(sizes))
    ys, xs = np.nonzero(mask)
    box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    return Localization(box, mask, segmentation, fg, bg)


def localize_in_windows(
    image: np.ndarray,
    saliencies: Sequence[np.ndarray],
    windows: Sequence[tuple[int, int, int, int]],
    weights: Sequence[float],
    *,
    foreground: float = 0.90,
    background: float = 0.30,
    gamma: float = 2.0,
    seed: int = 0,
) -> Localization:
    """:func:`localize` seeded by saliency maps of crops: pixels outside every window are
    background seeds.

    ``saliencies[i]`` is the map of the crop ``windows[i]`` (any size; resized to the
    window), e.g. from the best crops of :func:`actstats.explain.search.ranked_windows`,
    where the network sees the object. Each map is scaled to unit mean, so a crop whose
    gradient is large everywhere does not drown the others, resized into its window and
    added with its weight; inside the windows' union the sum's ``foreground``/``background``
    quantiles seed the GraphCut over the whole ``image``.
    """
    if not len(saliencies) == len(windows) == len(weights) or not windows:
        raise ActstatsError(
            f"{len(saliencies)} saliency maps, {len(windows)} windows, {len(weights)} weights: "
            "need one of each per window, at least one"
        )
    h, w = image.shape[:2]
    total = np.zeros((h, w))
    inside = np.zeros((h, w), bool)
    for sal, (x0, y0, x1, y1), weight in zip(saliencies, windows, weights, strict=True):
        sal = np.abs(np.asarray(sal, dtype=np.float64))
        mean = sal.mean()
        zoom = ((y1 - y0) / sal.shape[0], (x1 - x0) / sal.shape[1])
        inner = ndimage.zoom(sal / mean if mean > 0 else sal, zoom, order=1)
        inner = inner[: y1 - y0, : x1 - x0]
        total[y0 : y0 + inner.shape[0], x0 : x0 + inner.shape[1]] += weight * inner
        inside[y0:y1, x0:x1] = True
    fg_in, bg_in = seed_masks(total[inside].reshape(-1, 1), foreground, background)
    fg, bg = np.zeros((h, w), bool), ~inside
    fg[inside], bg[inside] = fg_in[:, 0], bg_in[:, 0]
    segmentation = graphcut_segment(np.asarray(image), fg, bg, gamma=gamma, seed=seed)
    return _largest_box(segmentation, fg, bg)
