"""Realism measures for synthesized images: pure functions on arrays, no file I/O.

* :func:`target_probability` - softmax probability of the target class;
* :func:`layer_nll` - negative log-likelihood of a layer's activations under the
  fitted class model (per image, optionally per unit);
* :func:`activation_statistics` / :func:`frechet_distance` - per-layer Fréchet
  distance between generated and real activations (pytorch-fid's formula, with
  its ``sqrtm`` retry and imaginary-part check);
* :func:`kernel_inception_distance` - unbiased polynomial-kernel MMD^2 between
  generated and real features (KID, Binkowski et al. 2018);
* :func:`diversity` - mean pairwise distance of a batch in a feature layer;
* :func:`judge_agreement` - how often another network agrees on the class;
* :func:`memorization` - whether images lie nearer the images a model was fitted
  on than held-out ones (nearest-neighbour distance ratio).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.linalg
import scipy.spatial.distance
from scipy.special import softmax

from actstats.errors import ActstatsError

__all__ = [
    "Memorization",
    "activation_statistics",
    "diversity",
    "frechet_distance",
    "frechet_distance_between",
    "judge_agreement",
    "kernel_inception_distance",
    "layer_nll",
    "memorization",
    "target_probability",
]


def target_probability(logits: np.ndarray, index: int) -> np.ndarray:
    """Softmax probability of class ``index`` for each row of ``logits`` (n, C) -> (n,)."""
    logits = np.asarray(logits, dtype=np.float64)
    return softmax(logits, axis=1)[:, index]


def layer_nll(model: Any, X: np.ndarray, *, per_unit: bool = False) -> np.ndarray:
    """Negative log-likelihood of each row of ``X`` (n, D) under a fitted layer model.

    ``per_unit`` divides by the model's dimension (D, or the reduced dimension of
    a mixture) so layers of different widths can be compared.
    """
    nll = -np.asarray(model.score_samples(np.asarray(X, dtype=np.float64)))
    if per_unit:
        basis = getattr(model, "basis_", None)
        nll = nll / (basis.shape[1] if basis is not None else model.n_features_)
    return nll


def activation_statistics(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and covariance (D, D) of the rows of ``X`` (unbiased, as pytorch-fid)."""
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[0] < 2:
        raise ActstatsError(f"activations of shape {X.shape}: need (n >= 2, D) for statistics")
    return X.mean(axis=0), np.atleast_2d(np.cov(X, rowvar=False))


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6
) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2).

    ``||mu1 - mu2||^2 + tr(S1 + S2 - 2 sqrt(S1 S2))``. When the product is
    singular (fewer samples than dimensions) ``eps`` is added to both diagonals
    and ``sqrtm`` retried; an imaginary part larger than 1e-3 is an error.
    """
    mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
    sigma1, sigma2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ActstatsError(
            f"Fréchet distance: shapes differ ({mu1.shape} vs {mu2.shape}, "
            f"{sigma1.shape} vs {sigma2.shape})"
        )
    diff = mu1 - mu2
    covmean = _sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        warnings.warn(
            f"Fréchet distance: singular product; adding {eps} to the diagonals",
            RuntimeWarning,
            stacklevel=2,
        )
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = _sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ActstatsError(
                f"Fréchet distance: sqrtm has an imaginary component "
                f"{np.max(np.abs(covmean.imag)):.3g}; use more samples"
            )
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


def _sqrtm(a: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = scipy.linalg.sqrtm(a)
    return result[0] if isinstance(result, tuple) else result


def frechet_distance_between(X: np.ndarray, Y: np.ndarray, eps: float = 1e-6) -> float:
    """Fréchet distance between the activation statistics of rows ``X`` and rows ``Y``."""
    return frechet_distance(*activation_statistics(X), *activation_statistics(Y), eps=eps)


def diversity(features: np.ndarray) -> float:
    """Mean Euclidean distance over all pairs of rows of ``features`` (n, D); 0 for n < 2."""
    F = np.asarray(features, dtype=np.float64).reshape(len(features), -1)
    n = F.shape[0]
    if n < 2:
        return 0.0
    sq = np.sum(F**2, axis=1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * F @ F.T, 0.0)
    return float(np.sqrt(d2)[np.triu_indices(n, 1)].mean())


def judge_agreement(judge_logits: np.ndarray, index: int) -> float:
    """Fraction of rows whose arg-max class under a judge network is ``index``."""
    return float(np.mean(np.argmax(np.asarray(judge_logits), axis=1) == index))


def kernel_inception_distance(X: np.ndarray, Y: np.ndarray, *, degree: int = 3) -> float:
    """Unbiased MMD^2 between rows of ``X`` (n, D) and ``Y`` (m, D), polynomial kernel.

    ``k(x, y) = (x . y / D + 1)^degree``;
    ``MMD^2 = sum_{i!=j} k(x_i, x_j) / (n(n-1)) + sum_{i!=j} k(y_i, y_j) / (m(m-1))
    - 2 sum_{i,j} k(x_i, y_j) / (nm)``. Unbiased, so it can fall below 0 when the
    sets come from one distribution; unlike the Fréchet distance it needs no
    covariance, so a few samples per class give an unbiased (if noisy) value.

    References: M. Binkowski, D. J. Sutherland, M. Arbel, A. Gretton, "Demystifying
    MMD GANs", ICLR 2018.
    """
    X = np.asarray(X, dtype=np.float64).reshape(len(X), -1)
    Y = np.asarray(Y, dtype=np.float64).reshape(len(Y), -1)
    n, m = len(X), len(Y)
    if n < 2 or m < 2 or X.shape[1] != Y.shape[1]:
        raise ActstatsError(
            f"KID: need >= 2 rows of equal width on each side, got {X.shape} and {Y.shape}"
        )
    d = X.shape[1]
    kxx = (X @ X.T / d + 1.0) ** degree
    kyy = (Y @ Y.T / d + 1.0) ** degree
    kxy = (X @ Y.T / d + 1.0) ** degree
    return float(
        (kxx.sum() - np.trace(kxx)) / (n * (n - 1))
        + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
        - 2.0 * kxy.mean()
    )


@dataclass(frozen=True)
class Memorization:
    """Nearest neighbours of each image among the fitted-on and the held-out images.

    ``ratio[i] = distance_fit[i] / distance_holdout[i]``; ``nearest_fit[i]`` and
    ``nearest_holdout[i]`` index the rows of the sets as given (before subsampling).
    """

    ratio: np.ndarray
    distance_fit: np.ndarray
    distance_holdout: np.ndarray
    nearest_fit: np.ndarray
    nearest_holdout: np.ndarray


def memorization(
    features: np.ndarray,
    fitted: np.ndarray,
    held_out: np.ndarray,
    *,
    random_state: int = 0,
) -> Memorization:
    """Does each image (row of ``features``) lie nearer the images a model was fitted on?

    ``fitted`` / ``held_out`` are features (n_fit, F) / (n_held, F) of the images
    the statistics or generator saw and of images they never saw, in the same
    space (e.g. a judge network's pooled features). The larger set is subsampled
    (seeded) to the smaller's size, since a nearest neighbour in a bigger set is
    nearer by chance alone. A method that copies its training images scores ~0;
    images as new as held-out real ones score ~1.
    """
    X = np.asarray(features, dtype=np.float64)
    A = np.asarray(fitted, dtype=np.float64)
    B = np.asarray(held_out, dtype=np.float64)
    if min(len(A), len(B)) < 1 or A.shape[1] != X.shape[1] or B.shape[1] != X.shape[1]:
        raise ActstatsError(
            f"memorization: need feature rows of one width, got {X.shape}, {A.shape}, {B.shape}"
        )
    rng = np.random.default_rng(random_state)
    size = min(len(A), len(B))
    keep_a = np.sort(rng.choice(len(A), size, replace=False))
    keep_b = np.sort(rng.choice(len(B), size, replace=False))
    da = scipy.spatial.distance.cdist(X, A[keep_a])
    db = scipy.spatial.distance.cdist(X, B[keep_b])
    ia, ib = da.argmin(1), db.argmin(1)
    near_a, near_b = da[np.arange(len(X)), ia], db[np.arange(len(X)), ib]
    return Memorization(
        ratio=near_a / np.maximum(near_b, 1e-12),
        distance_fit=near_a,
        distance_holdout=near_b,
        nearest_fit=keep_a[ia],
        nearest_holdout=keep_b[ib],
    )
