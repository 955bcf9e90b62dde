"""Streaming low-rank + diagonal moments for layers too wide for a dense covariance.

A ViT block stored whole has D = 151,296 values per image: its dense covariance
would need 171 GiB. :class:`SketchMoments` keeps, instead of the D x D scatter
``m2``, its exact diagonal and a Frequent Directions sketch ``B`` (Liberty, KDD 2013)
of at most ``rows`` rows with ``B^T B ~ m2``; memory is O(rows * D).

Sketches merge exactly like moments (Chan et al.): the scatter of two sets of rows
about their joint mean is ``m2_a + m2_b + (n_a n_b / n) d d^T`` with ``d`` the
difference of their means, so the merged sketch is the Frequent Directions shrink
of ``[B_a; B_b; sqrt(n_a n_b / n) d]`` (mergeable summaries, Agarwal et al. 2013;
Ghashami et al. 2016). While a class has at most ``rows`` rows nothing is shrunk and
the sketch is exact; beyond that ``0 <= m2 - B^T B`` with spectral error at most
``||m2 - [m2]_k||_F^2 / (rows - k)`` for every k < rows.

The Gaussian fitted from a sketch is the low-rank + diagonal approximation of the
Ledoit-Wolf estimate that :func:`~actstats.stats.gaussian.fit_gaussian` makes
from dense moments, with ``||S||_F^2`` read from the sketch (exact while the sketch is).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg

from actstats.errors import ActstatsError
from actstats.stats.gaussian import GaussianLayerModel, variance_floor

__all__ = [
    "SketchMoments",
    "fit_gaussian_sketch",
    "merge_sketches",
    "sketch_basis",
    "sketch_from_array",
]


@dataclass
class SketchMoments:
    """Moments of ``n`` rows with the scatter kept as diagonal + sketch (all float64).

    Attributes
    ----------
    n : int
    mean : ndarray of shape (D,)
    m2_diag : ndarray of shape (D,)
        Exact diagonal of the centred scatter.
    sketch : ndarray of shape (r, D), r <= ``rows``
        ``sketch.T @ sketch`` approximates the centred scatter from below.
    rows : int
        Largest number of sketch rows kept.
    t3, q4 : ndarray of shape (D,), float
        ``sum_n ||e_n||^2 e_n`` and ``sum_n ||e_n||^4`` (Ledoit-Wolf), merged with the
        sketch standing in for ``m2`` where the dense formulas need it.
    vmin, vmax : ndarray of shape (D,)
    """

    n: int
    mean: np.ndarray
    m2_diag: np.ndarray
    sketch: np.ndarray
    rows: int
    t3: np.ndarray
    q4: float
    vmin: np.ndarray
    vmax: np.ndarray

    diag_only = False

    def variances(self, ddof: int = 0) -> np.ndarray:
        """Per-unit variances (exact)."""
        return self.m2_diag / max(self.n - ddof, 1)

    @property
    def exact(self) -> bool:
        """True while no row of the scatter has been shrunk away."""
        return self.n <= self.rows


def _shrink(M: np.ndarray, rows: int) -> np.ndarray:
    """Frequent Directions: at most ``rows`` rows whose Gram matrix is below ``M.T @ M``."""
    if M.shape[0] <= rows:
        return M
    _, s, vt = scipy.linalg.svd(M, full_matrices=False, lapack_driver="gesvd")
    s2 = np.clip(s[:rows] ** 2 - s[rows] ** 2 if len(s) > rows else s[:rows] ** 2, 0.0, None)
    return np.sqrt(s2)[:, None] * vt[:rows]


def sketch_from_array(X: np.ndarray, rows: int) -> SketchMoments:
    """Sketch moments of the rows of ``X`` (array-like of shape (n_samples, D))."""
    if rows < 1:
        raise ActstatsError(f"sketch rows {rows} must be at least 1")
    X = np.asarray(X, dtype=np.float64)
    n, d = X.shape
    if n == 0:
        z = np.zeros(d)
        return SketchMoments(
            0,
            z,
            z.copy(),
            np.zeros((0, d)),
            rows,
            z.copy(),
            0.0,
            np.full(d, np.inf),
            -np.full(d, np.inf),
        )
    mean = X.mean(axis=0)
    E = X - mean
    sq = np.einsum("ij,ij->i", E, E)
    return SketchMoments(
        n,
        mean,
        np.einsum("ij,ij->j", E, E),
        _shrink(E, rows),
        rows,
        sq @ E,
        float(sq @ sq),
        X.min(0),
        X.max(0),
    )


def _shift(m: SketchMoments, delta: np.ndarray) -> tuple[np.ndarray, float]:
    """(t3, q4) of ``m`` about ``m.mean - delta`` (the dense formulas with ``m2 ~ B^T B``)."""
    m2d = m.sketch.T @ (m.sketch @ delta)
    dd = float(delta @ delta)
    tr = float(m.m2_diag.sum())
    t3 = m.t3 + tr * delta + 2.0 * m2d + m.n * dd * delta
    q4 = m.q4 + 4.0 * float(delta @ m2d) + m.n * dd**2 + 4.0 * float(delta @ m.t3) + 2.0 * dd * tr
    return t3, q4


def merge_sketches(a: SketchMoments, b: SketchMoments) -> SketchMoments:
    """Merge the sketch moments of two disjoint sets of rows."""
    if a.n == 0:
        return b
    if b.n == 0:
        return a
    n = a.n + b.n
    d = b.mean - a.mean
    mean = a.mean + d * (b.n / n)
    t3a, q4a = _shift(a, a.mean - mean)
    t3b, q4b = _shift(b, b.mean - mean)
    rows = max(a.rows, b.rows)
    cross = np.sqrt(a.n * b.n / n) * d
    return SketchMoments(
        n,
        mean,
        a.m2_diag + b.m2_diag + (a.n * b.n / n) * d**2,
        _shrink(np.vstack([a.sketch, b.sketch, cross[None, :]]), rows),
        rows,
        t3a + t3b,
        q4a + q4b,
        np.minimum(a.vmin, b.vmin),
        np.maximum(a.vmax, b.vmax),
    )


def _eigen(m: SketchMoments, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Largest ``k`` eigenvalues of ``B^T B / n`` and their eigenvectors (D, k)."""
    if m.sketch.shape[0] == 0 or k == 0:
        return np.zeros(0), np.zeros((m.mean.shape[0], 0))
    _, s, vt = scipy.linalg.svd(m.sketch, full_matrices=False, lapack_driver="gesvd")
    k = min(k, len(s))
    vecs = vt[:k].T
    signs = np.sign(vecs[np.argmax(np.abs(vecs), axis=0), np.arange(k)])
    signs[signs == 0] = 1.0
    return s[:k] ** 2 / max(m.n, 1), vecs * signs


def sketch_basis(m: SketchMoments, r: int) -> tuple[np.ndarray, np.ndarray]:
    """(mean, (D, r) orthonormal basis of the top principal directions) from the sketch."""
    _, vecs = _eigen(m, r)
    return m.mean.copy(), vecs


def _ledoit_wolf(m: SketchMoments) -> float:
    n, d = m.n, m.mean.shape[0]
    if d == 1 or n == 0:
        return 0.0
    diag = m.m2_diag / n
    mu = diag.sum() / d
    gram = m.sketch @ m.sketch.T / n
    frob = max(float(np.sum(gram**2)), float(np.sum(diag**2)))  # ||S||_F^2 >= its diagonal's
    beta = (m.q4 / n - frob) / (d * n)
    delta = (frob - 2.0 * mu * diag.sum() + d * mu**2) / d
    beta = min(beta, delta)
    return 0.0 if beta <= 0 or delta <= 0 else float(beta / delta)


def fit_gaussian_sketch(m: SketchMoments, rank: int) -> GaussianLayerModel:
    """A low-rank (``rank``) + diagonal Gaussian of the Ledoit-Wolf-shrunk covariance.

    As the dense low-rank fit: shrink ``S`` toward ``mu I`` by the Ledoit-Wolf
    coefficient, take its top ``rank`` eigenpairs (from the sketch), put the
    average of the remaining variance as the isotropic part (PPCA), and give each
    unit the rest of its exact variance as its own noise variance.
    """
    if m.n < 1:
        raise ActstatsError("cannot fit a Gaussian to 0 rows; the class has no usable images")
    d = m.mean.shape[0]
    g = GaussianLayerModel(cov=f"lowrank:{rank}")
    g.mean_, g.n_samples_ = m.mean.copy(), m.n
    g.var_floor_ = variance_floor(m.variances(), m.mean)
    k = int(min(rank, d - 1, m.n - 1, m.sketch.shape[0]))
    shrink = _ledoit_wolf(m)
    diag = m.variances()
    mu = diag.sum() / d
    if k < 1:
        g.cov_type_, g.shrinkage_ = "diag", 0.0
        g.variances_ = diag + g.var_floor_
        return g
    vals, vecs = _eigen(m, k)
    vals = (1.0 - shrink) * vals + shrink * mu
    shrunk_diag = (1.0 - shrink) * diag + shrink * mu
    rest = max(float(shrunk_diag.sum()) - float(vals.sum()), 0.0)
    sigma2 = rest / (d - k)
    W = vecs * np.sqrt(np.clip(vals - sigma2, 0.0, None))
    g.cov_type_, g.shrinkage_ = "lowrank", shrink
    g.components_ = W
    g.noise_variance_ = np.maximum(shrunk_diag - np.sum(W**2, axis=1), 0.0) + g.var_floor_
    return g
