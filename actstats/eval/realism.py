"""How realistic are synthesized images? The measurement shared by the demo and the benchmark.

For one class and one method, given the generated images (uint8, as written to
PNG) and the real images of that class, :func:`measure_images` reports

* ``target_probability`` - mean softmax probability of the class in the network
  the images were optimized against;
* ``judge_agreement`` - fraction the *judge* (another architecture, another
  seed, trained on the same images) classifies as the class, so a method cannot
  score by fitting the network it optimizes;
* ``frechet_net[layer]`` / ``frechet_judge[layer]`` - Fréchet distance between
  the images' and the held-out real images' globally average-pooled activations
  (the FID recipe), per layer, in both networks;
* ``pixel_nll_ratio`` - ``mean NLL(generated) / mean NLL(real)`` under a
  per-class Gaussian on RGB pixels in 8-bit units (0..255), with a Ledoit-Wolf
  shrunk covariance fitted on the evaluation split's reference images; the
  denominator is the fit split's images (so the ratio of real evaluation images
  is measured, not 1 by construction), and both terms are out of sample. The ratio
  depends on the pixel units through the normalizing constant, so
  ``pixel_nll_excess`` (``(mean NLL(gen) - mean NLL(real)) / D``, nats per
  pixel value) is reported too: a difference of log densities is unit-free;
* ``diversity_pixels`` / ``diversity_judge`` - mean pairwise Euclidean distance
  of the images in pixels ([0, 1]) and in the judge's pooled features;
* ``memorization_ratio`` - per image, the distance to its nearest neighbour among
  the images the statistics (or a generator) were fitted on divided by the
  distance to its nearest held-out image, in the judge's pooled features,
  averaged (:func:`actstats.eval.metrics.memorization`): about 1 for images no
  closer to the training images than to unseen ones, 0 for copies of training
  images, so a method cannot look realistic by reproducing what it was fitted on.

Everything here is arrays in, numbers out; the callers read and write files.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.linalg
import torch

from actstats.errors import ActstatsError
from actstats.eval.metrics import (
    activation_statistics,
    diversity,
    frechet_distance,
    judge_agreement,
    memorization,
    target_probability,
)
from actstats.net.network import Network

__all__ = [
    "DEFINITIONS",
    "ClassReference",
    "PixelGaussian",
    "build_reference",
    "fit_pixel_gaussian",
    "measure_images",
    "pooled_features",
    "summarize",
    "to_inputs",
]

#: What each metric is, for the JSON results and the report.
DEFINITIONS = {
    "target_probability": "mean softmax probability of the class in the optimized network",
    "judge_agreement": "fraction of images the judge network (other architecture and seed) "
    "classifies as the class",
    "frechet_net": "per layer, Fréchet distance between the images' and the evaluation "
    "split's reference images' spatially averaged activations in the optimized network",
    "frechet_judge": "the same in the judge network",
    "pixel_nll_ratio": "mean NLL(images) / mean NLL(fit-split images) under a per-class "
    "Ledoit-Wolf Gaussian on RGB pixels (0..255) fitted on the evaluation split's "
    "reference images",
    "pixel_nll_excess": "(mean NLL(generated) - mean NLL(real)) / pixel values, nats; unit-free",
    "diversity_pixels": "mean pairwise Euclidean distance of the images, pixels in [0, 1]",
    "diversity_judge": "mean pairwise Euclidean distance in the judge's pooled features",
    "memorization_ratio": "mean over images of (distance to the nearest fitting-half image) / "
    "(distance to the nearest held-out image) in the judge's pooled features, equal-size sets; "
    "~1 = no closer to the training images than to unseen ones, 0 = copies of training images",
}


# ------------------------------------------------------------------ pixel Gaussian
@dataclass(frozen=True)
class PixelGaussian:
    """``N(mean_, scale_ * I + factor_ @ factor_.T)`` on flattened pixels (D,).

    The covariance is a scaled identity plus a rank-``n`` term, which is what a
    shrunk covariance of ``n`` < ``D`` images is; it is never formed, so a 32x32
    RGB image (D = 3072) costs ``n x n`` algebra (Woodbury identity).
    """

    mean_: np.ndarray
    scale_: float
    factor_: np.ndarray
    shrinkage_: float

    def covariance(self) -> np.ndarray:
        """The dense (D, D) covariance (for checks on small D)."""
        return self.scale_ * np.eye(self.mean_.shape[0]) + self.factor_ @ self.factor_.T

    def nll(self, X: np.ndarray) -> np.ndarray:
        """Negative log density (nats) of each row of ``X`` (n, ...) flattened to (n, D).

        ``0.5 * (D log 2 pi + log det S + (x - mu)^T S^-1 (x - mu))`` with
        ``S = a I + U U^T``: ``det S = a^(D-k) det(a I_k + U^T U)`` and
        ``S^-1 = (I - U (a I_k + U^T U)^-1 U^T) / a``.
        """
        V = np.asarray(X, dtype=np.float64).reshape(len(X), -1)
        d, k = self.factor_.shape
        if V.shape[1] != d:
            raise ActstatsError(f"pixel Gaussian: rows of {V.shape[1]} values, model has {d}")
        V = V - self.mean_
        small = np.linalg.cholesky(self.scale_ * np.eye(k) + self.factor_.T @ self.factor_)
        W = scipy.linalg.solve_triangular(small, (V @ self.factor_).T, lower=True)
        mahal = (np.sum(V**2, axis=1) - np.sum(W**2, axis=0)) / self.scale_
        logdet = (d - k) * np.log(self.scale_) + 2.0 * np.sum(np.log(np.diag(small)))
        return 0.5 * (d * np.log(2.0 * np.pi) + logdet + mahal)


def fit_pixel_gaussian(pixels: np.ndarray) -> PixelGaussian:
    """Ledoit-Wolf shrunk Gaussian of images (n, ...) flattened to (n, D), n < D.

    With fewer images than pixel values the sample covariance ``S`` is singular;
    Ledoit and Wolf's ``(1 - s) S + s tr(S)/D I`` is well conditioned. The
    shrinkage ``s`` is scikit-learn's ``ledoit_wolf_shrinkage`` formula written
    with the (n, n) Gram matrix instead of (D, D) products.

    References: O. Ledoit, M. Wolf, "A well-conditioned estimator for
    large-dimensional covariance matrices", J. Multivariate Analysis 88 (2004).
    """
    X = np.asarray(pixels, dtype=np.float64).reshape(len(pixels), -1)
    n, d = X.shape
    if n < 2:
        raise ActstatsError(f"pixel Gaussian: need >= 2 real images, got {n}")
    mean = X.mean(axis=0)
    Xc = X - mean
    G = Xc @ Xc.T
    trace = np.trace(G) / n  # tr(S)
    mu = trace / d
    delta_ = np.sum(G**2) / n**2  # ||S||_F^2
    delta = (delta_ - 2.0 * mu * trace + d * mu**2) / d  # ||S - mu I||_F^2 / D
    beta = min((np.sum(np.diag(G) ** 2) / n - delta_) / (d * n), delta)
    shrinkage = 0.0 if beta == 0 else float(beta / delta)
    scale = shrinkage * mu
    if not scale > 0:
        raise ActstatsError(
            f"pixel Gaussian: {n} images of {d} values give no shrinkage "
            "(constant images, or more images than pixel values)"
        )
    return PixelGaussian(mean, float(scale), np.sqrt((1.0 - shrinkage) / n) * Xc.T, shrinkage)


# ------------------------------------------------------------------ features
def to_inputs(network: Network, images: np.ndarray) -> torch.Tensor:
    """uint8 images (n, H, W, 3) -> the network's normalized inputs (n, 3, H, W)."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0
    return network.preprocessing.normalize(x)


def pooled_features(
    network: Network, images: np.ndarray, layers: Sequence[str], *, batch_size: int = 256
) -> dict[str, np.ndarray]:
    """Activations of ``layers`` for uint8 ``images``: conv maps averaged over space.

    Returns ``{layer: (n, channels or units)}`` in float64.
    """
    parts: dict[str, list[np.ndarray]] = {layer: [] for layer in layers}
    x = to_inputs(network, images)
    with torch.inference_mode():
        for start in range(0, len(x), batch_size):
            acts = network.activations(x[start : start + batch_size].to(network.device), layers)
            for layer, a in acts.items():
                a = a.mean(dim=(2, 3)) if a.ndim == 4 else a.flatten(1)
                parts[layer].append(a.double().cpu().numpy())
    return {layer: np.concatenate(p) for layer, p in parts.items()}


def _logits(network: Network, images: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return network.module(to_inputs(network, images).to(network.device)).double().cpu().numpy()


# ------------------------------------------------------------------ reference
@dataclass(frozen=True)
class ClassReference:
    """What one class's real images give the measurement.

    ``net``/``judge`` are the held-out images' statistics per layer (mean,
    covariance); ``pixels`` the Gaussian fitted on them; ``real_nll`` the mean
    NLL of the class's other (fitting-half) images under it; ``judge_fit`` /
    ``judge_holdout`` the judge's deepest pooled features of both halves (for
    :func:`~actstats.eval.metrics.memorization`).
    """

    index: int
    net: dict[str, tuple[np.ndarray, np.ndarray]]
    judge: dict[str, tuple[np.ndarray, np.ndarray]]
    pixels: PixelGaussian
    real_nll: float
    judge_fit: np.ndarray
    judge_holdout: np.ndarray


def build_reference(
    network: Network,
    judge: Network,
    index: int,
    fit_images: np.ndarray,
    holdout_images: np.ndarray,
    *,
    net_layers: Sequence[str],
    judge_layers: Sequence[str],
) -> ClassReference:
    """Reference statistics of class ``index`` from its real uint8 images.

    Fréchet distances are measured at ``net_layers`` of ``network`` and
    ``judge_layers`` of ``judge`` (the demo's are in :mod:`actstats.demo.digits`).

    ``holdout_images`` (never seen by the networks or the fitted statistics, nor
    measured as the real row) give the Fréchet references and the pixel Gaussian;
    ``fit_images`` the real NLL, the pixel NLL ratio's denominator.
    """
    pixels = fit_pixel_gaussian(holdout_images)
    net = pooled_features(network, holdout_images, net_layers)
    jud = pooled_features(judge, holdout_images, judge_layers)
    return ClassReference(
        index=index,
        net={ly: activation_statistics(v) for ly, v in net.items()},
        judge={ly: activation_statistics(v) for ly, v in jud.items()},
        pixels=pixels,
        real_nll=float(np.mean(pixels.nll(fit_images))),
        judge_fit=pooled_features(judge, fit_images, [judge_layers[-1]])[judge_layers[-1]],
        judge_holdout=jud[judge_layers[-1]],
    )


# ------------------------------------------------------------------ measurement
def measure_images(
    images: np.ndarray,
    ref: ClassReference,
    network: Network,
    judge: Network,
) -> dict[str, Any]:
    """Every realism metric of uint8 ``images`` (n >= 2, H, W, 3) for the class of ``ref``."""
    images = np.asarray(images)
    if images.ndim != 4 or len(images) < 2:
        raise ActstatsError(f"realism: need >= 2 images (n, H, W, 3), got shape {images.shape}")
    net_layers, judge_layers = list(ref.net), list(ref.judge)
    net = pooled_features(network, images, net_layers)
    jud = pooled_features(judge, images, judge_layers)
    nll = ref.pixels.nll(images)
    d = ref.pixels.mean_.shape[0]
    memo = memorization(jud[judge_layers[-1]], ref.judge_fit, ref.judge_holdout)
    return {
        "n": len(images),
        "target_probability": float(
            np.mean(target_probability(_logits(network, images), ref.index))
        ),
        "judge_agreement": judge_agreement(_logits(judge, images), ref.index),
        "frechet_net": {ly: _frechet(net[ly], ref.net[ly]) for ly in net_layers},
        "frechet_judge": {ly: _frechet(jud[ly], ref.judge[ly]) for ly in judge_layers},
        "pixel_nll_ratio": float(np.mean(nll) / ref.real_nll),
        "pixel_nll_excess": float((np.mean(nll) - ref.real_nll) / d),
        "diversity_pixels": diversity(images.reshape(len(images), -1) / 255.0),
        "diversity_judge": diversity(jud[judge_layers[-1]]),
        "memorization_ratio": float(np.mean(memo.ratio)),
        "nearest_fit": memo.nearest_fit.tolist(),
        "nearest_holdout": memo.nearest_holdout.tolist(),
    }


def _frechet(X: np.ndarray, ref: tuple[np.ndarray, np.ndarray]) -> float:
    with warnings.catch_warnings():  # few samples -> singular product; evaluate retries
        warnings.simplefilter("ignore", RuntimeWarning)
        return frechet_distance(*activation_statistics(X), *ref)


_SCALARS = (
    "target_probability",
    "judge_agreement",
    "pixel_nll_ratio",
    "pixel_nll_excess",
    "diversity_pixels",
    "diversity_judge",
    "memorization_ratio",
)


def summarize(per_class: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> dict[str, Any]:
    """Average ``{class: {method: metrics}}`` over classes into ``{method: metrics}``.

    Scalars are class means (``min_target_probability`` keeps the worst class);
    Fréchet distances are per-layer class means.
    """
    methods: dict[str, list[Mapping[str, Any]]] = {}
    for by_method in per_class.values():
        for method, metrics in by_method.items():
            methods.setdefault(method, []).append(metrics)
    out: dict[str, Any] = {}
    for method, rows in methods.items():
        summary: dict[str, Any] = {k: float(np.mean([r[k] for r in rows])) for k in _SCALARS}
        summary["min_target_probability"] = float(min(r["target_probability"] for r in rows))
        for key in ("frechet_net", "frechet_judge"):
            summary[key] = {ly: float(np.mean([r[key][ly] for r in rows])) for ly in rows[0][key]}
        summary["classes"] = len(rows)
        out[method] = summary
    return out
