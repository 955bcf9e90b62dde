"""Streaming, mergeable moments and Gaussian layer models (full, diagonal, low-rank + diagonal).

Moments of a chunk of rows are computed in float64 and merged pairwise (Chan,
Golub & LeVeque 1979), so the mean and covariance of N rows never need more
than one chunk in memory. Alongside the centred second moment ``m2`` a
:class:`Moments` keeps the two extra sums Ledoit-Wolf shrinkage needs,
``t3 = sum_n ||e_n||^2 e_n`` and ``q4 = sum_n ||e_n||^4`` (e = x - mean),
merged exactly with the same shift formulas.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.linalg
import scipy.sparse.linalg
from sklearn.base import BaseEstimator, DensityMixin
from sklearn.utils.validation import validate_data

from actstats.errors import ActstatsError
from actstats.stats.base import (
    QuadraticFactors,
    as_rows,
    check_random_state,
    log_likelihood,
    precision_dot,
    squared_distance,
)

__all__ = [
    "GaussianLayerModel",
    "Moments",
    "fit_gaussian",
    "ledoit_wolf_shrinkage_from_moments",
    "merge_moments",
    "moments_from_array",
    "oas_shrinkage_from_moments",
    "parse_cov_spec",
    "top_eigen",
    "variance_floor",
]

#: Relative variance floor: dead or constant units get this times the mean variance.
VAR_REL_FLOOR = 1e-6
#: Absolute variance floor, used when every unit is constant.
VAR_ABS_FLOOR = 1e-12


@dataclass
class Moments:
    """Centred moments of ``n`` rows, in float64.

    Attributes
    ----------
    n : int
        Number of rows.
    mean : ndarray of shape (D,)
    m2 : ndarray of shape (D, D) or (D,)
        Sum of outer products of deviations (or only its diagonal when ``diag_only``).
    t3 : ndarray of shape (D,) or None
        ``sum_n ||e_n||^2 e_n`` (full moments only).
    q4 : float or None
        ``sum_n ||e_n||^4`` (full moments only).
    vmin, vmax : ndarray of shape (D,)
        Per-unit minimum and maximum.
    """

    n: int
    mean: np.ndarray
    m2: np.ndarray
    t3: np.ndarray | None
    q4: float | None
    vmin: np.ndarray
    vmax: np.ndarray

    @property
    def diag_only(self) -> bool:
        """True when only the diagonal of the second moment is kept."""
        return self.m2.ndim == 1

    def covariance(self, ddof: int = 0) -> np.ndarray:
        """Covariance ``m2 / (n - ddof)`` (diagonal only if the moments are)."""
        return self.m2 / max(self.n - ddof, 1)

    def variances(self, ddof: int = 0) -> np.ndarray:
        """Per-unit variances."""
        m2 = self.m2 if self.diag_only else np.diagonal(self.m2)
        return m2 / max(self.n - ddof, 1)


def moments_from_array(X: np.ndarray, *, diag_only: bool = False) -> Moments:
    """Moments of the rows of ``X`` (converted to float64).

    Parameters
    ----------
    X : array-like of shape (n_samples, D)
    diag_only : bool
        Keep only the diagonal of the second moment (O(D) memory).
    """
    X = np.asarray(X, dtype=np.float64)
    n, d = X.shape
    if n == 0:
        return _empty_moments(d, diag_only)
    mean = X.mean(axis=0)
    E = X - mean
    if diag_only:
        return Moments(n, mean, np.einsum("ij,ij->j", E, E), None, None, X.min(0), X.max(0))
    sq = np.einsum("ij,ij->i", E, E)
    return Moments(n, mean, E.T @ E, sq @ E, float(sq @ sq), X.min(0), X.max(0))


def _empty_moments(d: int, diag_only: bool) -> Moments:
    m2 = np.zeros(d) if diag_only else np.zeros((d, d))
    t3, q4 = (None, None) if diag_only else (np.zeros(d), 0.0)
    return Moments(0, np.zeros(d), m2, t3, q4, np.full(d, np.inf), np.full(d, -np.inf))


def _shift(m: Moments, delta: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, float | None]:
    """Moments of ``m`` about ``m.mean - delta``... expressed about a new centre.

    ``delta = m.mean - new_mean``; returns (m2, t3, q4) about ``new_mean``.
    """
    n = m.n
    if m.diag_only:
        return m.m2 + n * delta**2, None, None
    m2d = m.m2 @ delta
    dd = float(delta @ delta)
    tr = float(np.trace(m.m2))
    m2 = m.m2 + n * np.outer(delta, delta)
    t3 = m.t3 + tr * delta + 2.0 * m2d + n * dd * delta
    q4 = m.q4 + 4.0 * float(delta @ m2d) + n * dd**2 + 4.0 * float(delta @ m.t3) + 2.0 * dd * tr
    return m2, t3, q4


def merge_moments(a: Moments, b: Moments) -> Moments:
    """Merge the moments of two disjoint sets of rows (exact, pairwise).

    Both must have the same dimension and the same ``diag_only``.
    """
    if a.n == 0:
        return b
    if b.n == 0:
        return a
    n = a.n + b.n
    mean = a.mean + (b.mean - a.mean) * (b.n / n)
    m2a, t3a, q4a = _shift(a, a.mean - mean)
    m2b, t3b, q4b = _shift(b, b.mean - mean)
    t3 = None if t3a is None else t3a + t3b
    q4 = None if q4a is None else q4a + q4b
    return Moments(
        n, mean, m2a + m2b, t3, q4, np.minimum(a.vmin, b.vmin), np.maximum(a.vmax, b.vmax)
    )


def ledoit_wolf_shrinkage_from_moments(m: Moments) -> float:
    """Ledoit-Wolf shrinkage from streamed moments, as ``sklearn.covariance.ledoit_wolf_shrinkage``.

    With centred rows e_n, ``beta_ = sum_n ||e_n||^4`` (= ``q4``) and ``delta_ = ||S||_F^2``
    where S is the empirical (ddof=0) covariance.
    """
    if m.diag_only:
        raise ActstatsError("Ledoit-Wolf shrinkage needs full moments; use --cov full")
    n, d = m.n, m.mean.shape[0]
    if d == 1 or n == 0:
        return 0.0
    S = m.m2 / n
    trace_diag = np.diagonal(S)
    mu = trace_diag.sum() / d
    delta_ = float(np.sum(S**2))
    beta = (m.q4 / n - delta_) / (d * n)
    delta = (delta_ - 2.0 * mu * trace_diag.sum() + d * mu**2) / d
    beta = min(beta, delta)
    return 0.0 if beta == 0 else float(beta / delta)


def oas_shrinkage_from_moments(m: Moments) -> float:
    """Oracle Approximating Shrinkage coefficient, as ``sklearn.covariance.OAS``."""
    if m.diag_only:
        raise ActstatsError("OAS shrinkage needs full moments; use --cov full:oas")
    n, d = m.n, m.mean.shape[0]
    if d == 1:
        return 0.0
    S = m.m2 / max(n, 1)
    alpha = float(np.mean(S**2))
    mu2 = (np.trace(S) / d) ** 2
    den = (n + 1) * (alpha - mu2 / d)
    return 1.0 if den == 0 else float(min((alpha + mu2) / den, 1.0))


def variance_floor(variances: np.ndarray, mean: np.ndarray) -> float:
    """Floor for per-unit variances so dead/constant units keep finite likelihoods."""
    scale = max(float(np.mean(variances)), 1e-6 * float(np.mean(mean**2)), 0.0)
    return max(VAR_REL_FLOOR * scale, VAR_ABS_FLOOR)


def top_eigen(S: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Largest ``k`` eigenvalues (descending, clipped at 0) and eigenvectors (D, k) of ``S``."""
    d = S.shape[0]
    k = int(min(max(k, 0), d))
    if k == 0:
        return np.zeros(0), np.zeros((d, 0))
    vals = vecs = None
    if d > 256 and k <= d // 8:
        # Wide layer (fc6/fc7: D = 4096), few components: Lanczos costs O(D^2 k)
        # against eigh's O(D^3), ~6 s a call on two cores; a fixed start vector
        # keeps it deterministic, and eigh remains the fallback.
        try:
            vals, vecs = scipy.sparse.linalg.eigsh(S, k=k, which="LA", v0=np.ones(d), tol=0)
        except scipy.sparse.linalg.ArpackError:
            vals = vecs = None
    if vals is None or vecs is None:
        vals, vecs = scipy.linalg.eigh(S, subset_by_index=[d - k, d - 1])
    order = np.argsort(vals)[::-1]
    vecs = vecs[:, order]
    # deterministic sign: largest-magnitude entry of each vector positive
    signs = np.sign(vecs[np.argmax(np.abs(vecs), axis=0), np.arange(k)])
    signs[signs == 0] = 1.0
    return np.clip(vals[order], 0.0, None), vecs * signs


def parse_cov_spec(spec: str) -> tuple[str, dict]:
    """Parse ``full``, ``full:oas``, ``full:empirical``, ``diag``, ``lowrank:K`` or ``auto``.

    Returns
    -------
    (form, options)
    """
    s = spec.strip().lower()
    if s in ("full", "full:lw", "full:ledoit-wolf"):
        return "full", {"shrinkage": "ledoit-wolf"}
    if s == "full:oas":
        return "full", {"shrinkage": "oas"}
    if s in ("full:empirical", "full:none"):
        return "full", {"shrinkage": "none"}
    if s in ("diag", "auto"):
        return s, {}
    if s.startswith("lowrank:"):
        try:
            k = int(s.split(":", 1)[1])
        except ValueError:
            k = -1
        if k >= 1:
            return "lowrank", {"rank": k}
    raise ActstatsError(
        f"--cov {spec!r} is not understood; use full, full:oas, full:empirical, diag, "
        "lowrank:K (K >= 1) or auto"
    )


class GaussianLayerModel(DensityMixin, BaseEstimator):
    """A Gaussian over one layer's activations: full, diagonal or low-rank + diagonal covariance.

    Build one with :func:`fit_gaussian` (from streamed :class:`Moments`) or
    :meth:`fit` (from an in-memory array). Fitted state: ``mean_`` (D,),
    ``cov_type_``, and ``covariance_`` (full), ``variances_`` (diag) or
    ``components_`` (D, K) + ``noise_variance_`` (D,) (low-rank: cov = W W^T + diag(psi)).
    ``n_samples_``, ``shrinkage_`` and ``quantiles_`` (levels in ``quantile_levels_``)
    are set by the fit pipeline where known.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.random.default_rng(0).normal(size=(200, 3))
    >>> g = GaussianLayerModel(cov="full").fit(X)
    >>> g.score_samples(X[:2]).shape
    (2,)
    """

    kind = "gaussian"

    def __init__(self, *, cov: str = "auto") -> None:
        self.cov = cov

    # -- fitting -------------------------------------------------------------------------
    def fit(self, X: np.ndarray, y: object = None) -> GaussianLayerModel:
        """Fit to the rows of ``X`` (array-like of shape (n_samples, D)); returns ``self``."""
        X = validate_data(self, X, dtype=np.float64)
        form, _ = parse_cov_spec(self.cov)
        fitted = fit_gaussian(moments_from_array(X, diag_only=form == "diag"), cov=self.cov)
        self.__dict__.update({k: v for k, v in fitted.__dict__.items() if k.endswith("_")})
        return self

    def set_quantiles(self, levels: np.ndarray, quantiles: np.ndarray) -> GaussianLayerModel:
        """Record per-unit quantiles of the real activations (``quantiles`` of shape
        (len(levels), D), e.g. from streamed histograms); returns ``self``."""
        levels = np.asarray(levels, dtype=np.float64)
        quantiles = np.asarray(quantiles, dtype=np.float64)
        if quantiles.shape != (len(levels), self.n_features_):
            raise ActstatsError(
                f"quantiles have shape {quantiles.shape}; expected ({len(levels)}, "
                f"{self.n_features_})"
            )
        self.quantile_levels_, self.quantiles_ = levels, quantiles
        return self

    # -- factors -------------------------------------------------------------------------
    @property
    def n_features_(self) -> int:
        """Number of units D."""
        return int(self.mean_.shape[0])

    def quadratic_factors(self) -> QuadraticFactors:
        """The squared-Mahalanobis factors of this model (see :class:`QuadraticFactors`)."""
        f = self.__dict__.get("_factors")
        if f is None:
            f = _FACTORS[self.cov_type_](self)
            self._factors = f
        return f

    def marginal_variances(self) -> np.ndarray:
        """Per-unit variances (diagonal of the covariance), shape (D,)."""
        if self.cov_type_ == "full":
            return np.diagonal(self.covariance_).copy()
        if self.cov_type_ == "diag":
            return self.variances_.copy()
        return self.noise_variance_ + np.sum(self.components_**2, axis=1)

    def covariance_column(self, j: int) -> np.ndarray:
        """Column ``j`` of the covariance, shape (D,)."""
        if self.cov_type_ == "full":
            return self.covariance_[:, j].copy()
        col = np.zeros(self.n_features_)
        if self.cov_type_ == "diag":
            col[j] = self.variances_[j]
            return col
        col = self.components_ @ self.components_[j]
        col[j] += self.noise_variance_[j]
        return col

    def get_covariance(self) -> np.ndarray:
        """Dense covariance (D, D)."""
        if self.cov_type_ == "full":
            return self.covariance_.copy()
        if self.cov_type_ == "diag":
            return np.diag(self.variances_)
        return self.components_ @ self.components_.T + np.diag(self.noise_variance_)

    # -- scoring -------------------------------------------------------------------------
    def score_samples(self, X: np.ndarray) -> np.ndarray:
        """Log-likelihood of each row, shape (n_samples,)."""
        return log_likelihood(self.quadratic_factors(), X)

    def score(self, X: np.ndarray, y: object = None) -> float:
        """Mean log-likelihood of the rows of ``X``."""
        return float(np.mean(self.score_samples(X)))

    def mahalanobis(self, X: np.ndarray) -> np.ndarray:
        """Squared Mahalanobis distance of each row, shape (n_samples,)."""
        return squared_distance(self.quadratic_factors(), X)

    def unit_zscores(self, X: np.ndarray) -> np.ndarray:
        """Per-unit z-scores ``(x - mean) / std``, shape (n_samples, D)."""
        X = as_rows(X, self.n_features_)
        return (X - self.mean_) / np.sqrt(self.marginal_variances())

    def unit_contributions(self, X: np.ndarray) -> np.ndarray:
        """Each unit's share ``z_i (P z)_i`` of the squared Mahalanobis distance, (n, D).

        Rows sum to :meth:`mahalanobis`; large positive entries mark outlying units.
        """
        f = self.quadratic_factors()
        Z = as_rows(X, self.n_features_) - f.mean
        return Z * precision_dot(f, Z)

    def sample(self, n_samples: int = 1, random_state: object = None) -> np.ndarray:
        """Draw ``n_samples`` rows, shape (n_samples, D)."""
        rng = check_random_state(random_state)
        d = self.n_features_
        if self.cov_type_ == "diag":
            eps = rng.standard_normal((n_samples, d))
            return self.mean_ + eps * np.sqrt(self.variances_)
        if self.cov_type_ == "full":
            L = self.__dict__.get("_chol")
            if L is None:
                L = self._chol = np.linalg.cholesky(self.covariance_)
            return self.mean_ + rng.standard_normal((n_samples, d)) @ L.T
        k = self.components_.shape[1]
        latent = rng.standard_normal((n_samples, k))
        noise = rng.standard_normal((n_samples, d)) * np.sqrt(self.noise_variance_)
        return self.mean_ + latent @ self.components_.T + noise

    # -- state ---------------------------------------------------------------------------
    def to_state(self) -> tuple[dict, dict[str, np.ndarray]]:
        """(JSON-able parameters, named arrays) for saving; see :meth:`from_state`."""
        params = {
            "cov_type": self.cov_type_,
            "n_samples": int(self.n_samples_),
            "shrinkage": float(self.shrinkage_),
            "var_floor": float(self.var_floor_),
        }
        arrays = {"mean": self.mean_}
        for name in _STATE_ARRAYS[self.cov_type_] + ("quantiles", "quantile_levels"):
            if hasattr(self, name + "_"):
                arrays[name] = getattr(self, name + "_")
        return params, arrays

    @classmethod
    def from_state(cls, params: dict, arrays: dict[str, np.ndarray]) -> GaussianLayerModel:
        """Rebuild a fitted model from :meth:`to_state` output."""
        self = cls(cov=params["cov_type"])
        self.cov_type_ = params["cov_type"]
        self.n_samples_ = int(params["n_samples"])
        self.shrinkage_ = float(params["shrinkage"])
        self.var_floor_ = float(params["var_floor"])
        for name, value in arrays.items():
            setattr(self, name + "_", value)
        return self

    def __repr__(self) -> str:
        d = self.n_features_ if hasattr(self, "mean_") else "?"
        return f"GaussianLayerModel(cov_type={getattr(self, 'cov_type_', self.cov)!r}, D={d})"


_STATE_ARRAYS: dict[str, tuple[str, ...]] = {
    "full": ("covariance",),
    "diag": ("variances",),
    "lowrank": ("components", "noise_variance"),
}


def _factors_full(g: GaussianLayerModel) -> QuadraticFactors:
    L = np.linalg.cholesky(g.covariance_)
    U = scipy.linalg.solve_triangular(L, np.eye(L.shape[0]), lower=True).T
    logdet = 2.0 * float(np.sum(np.log(np.diagonal(L))))
    return QuadraticFactors(g.mean_, None, U, None, logdet)


def _factors_diag(g: GaussianLayerModel) -> QuadraticFactors:
    return QuadraticFactors(
        g.mean_, 1.0 / np.sqrt(g.variances_), None, None, float(np.sum(np.log(g.variances_)))
    )


def _factors_lowrank(g: GaussianLayerModel) -> QuadraticFactors:
    psi, W = g.noise_variance_, g.components_
    pinv_W = W / psi[:, None]
    L = np.linalg.cholesky(np.eye(W.shape[1]) + W.T @ pinv_W)
    minus = scipy.linalg.solve_triangular(L, pinv_W.T, lower=True).T  # Psi^-1 W L^-T
    logdet = float(np.sum(np.log(psi))) + 2.0 * float(np.sum(np.log(np.diagonal(L))))
    return QuadraticFactors(g.mean_, 1.0 / np.sqrt(psi), None, minus, logdet)


_FACTORS: dict[str, Callable[[GaussianLayerModel], QuadraticFactors]] = {
    "full": _factors_full,
    "diag": _factors_diag,
    "lowrank": _factors_lowrank,
}


def _auto_form(d: int, n: int, full_max_dim: int) -> tuple[str, dict]:
    # Ledoit-Wolf is built for N < D, so a layer narrow enough for a dense matrix
    # is always modelled full. A low-rank fit of N < D rows put every residual
    # variance at the (tiny) floor: units dead on the fitting images got
    # thousands of nats on held-out ones (digits fc6/fc7: 5000 nats per unit).
    if d <= full_max_dim:
        return "full", {"shrinkage": "ledoit-wolf"}
    k = min(64, n - 1, d - 1)
    return ("lowrank", {"rank": k}) if k >= 1 else ("diag", {})


def _fit_full(g: GaussianLayerModel, m: Moments, opts: dict) -> None:
    S = m.covariance()
    shrink = {
        "ledoit-wolf": ledoit_wolf_shrinkage_from_moments,
        "oas": oas_shrinkage_from_moments,
        "none": lambda _m: 0.0,
    }[opts["shrinkage"]](m)
    mu = np.trace(S) / S.shape[0]
    S = (1.0 - shrink) * S
    S.flat[:: S.shape[0] + 1] += shrink * mu + g.var_floor_
    g.covariance_, g.shrinkage_ = S, shrink


def _fit_diag(g: GaussianLayerModel, m: Moments, opts: dict) -> None:
    g.variances_ = m.variances() + g.var_floor_


def _fit_lowrank(g: GaussianLayerModel, m: Moments, opts: dict) -> None:
    # The low-rank + diagonal approximation of the Ledoit-Wolf estimate: the
    # shrinkage target s * tr(S)/D keeps every residual variance away from zero
    # (with N < D the sample's trailing eigenvalues are exactly zero).
    S = m.covariance()
    d = S.shape[0]
    shrink = ledoit_wolf_shrinkage_from_moments(m)
    mu = np.trace(S) / d
    S = (1.0 - shrink) * S
    S.flat[:: d + 1] += shrink * mu
    g.shrinkage_ = shrink
    k = int(min(opts["rank"], d))
    vals, vecs = top_eigen(S, k)
    rest = max(float(np.trace(S)) - float(vals.sum()), 0.0)
    sigma2 = rest / (d - k) if d > k else 0.0
    W = vecs * np.sqrt(np.clip(vals - sigma2, 0.0, None))
    psi = np.diagonal(S) - np.sum(W**2, axis=1)
    g.components_ = W
    g.noise_variance_ = np.maximum(psi, 0.0) + g.var_floor_


_FITTERS = {"full": _fit_full, "diag": _fit_diag, "lowrank": _fit_lowrank}


def fit_gaussian(m: Moments, *, cov: str = "auto", full_max_dim: int = 512) -> GaussianLayerModel:
    """Fit a :class:`GaussianLayerModel` from streamed moments.

    Parameters
    ----------
    m : Moments
        Moments of the class's rows (full moments unless ``cov == "diag"``).
    cov : str
        ``full`` (Ledoit-Wolf shrinkage), ``full:oas``, ``full:empirical``, ``diag``,
        ``lowrank:K`` (of the Ledoit-Wolf estimate) or ``auto`` (full with Ledoit-Wolf
        shrinkage if D <= ``full_max_dim``, any N; else low-rank with K = min(64, N - 1)).
    full_max_dim : int
        Widest layer ``auto`` models with a full covariance.

    Notes
    -----
    Every variance gets a floor (:func:`variance_floor`), so constant units and N < D
    give finite log-likelihoods.
    """
    if m.n < 1:
        raise ActstatsError("cannot fit a Gaussian to 0 rows; the class has no usable images")
    form, opts = parse_cov_spec(cov)
    d = m.mean.shape[0]
    if form == "auto":
        form, opts = _auto_form(d, m.n, full_max_dim)
    if form != "diag" and m.diag_only:
        raise ActstatsError(f"--cov {cov}: needs full moments but only the diagonal was kept")
    if form == "lowrank" and min(opts["rank"], m.n - 1, d - 1) < 1:
        form, opts = "diag", {}
    g = GaussianLayerModel(cov=cov)
    g.cov_type_, g.mean_, g.n_samples_, g.shrinkage_ = form, m.mean.copy(), m.n, 0.0
    g.var_floor_ = variance_floor(m.variances(), m.mean)
    _FITTERS[form](g, m, opts)
    return g
