"""Gaussian mixtures over a layer's activations, fitted in a reduced PCA basis.

A :class:`MixtureLayerModel` holds a basis (``basis_mean_`` (D,), ``basis_`` (D, r),
orthonormal columns) and a full-covariance scikit-learn ``GaussianMixture`` over the
reduced coordinates ``z = (x - basis_mean_) @ basis_``. Densities are densities of
``z`` (an r-dimensional model of the layer's principal subspace).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.linalg
from scipy.special import logsumexp
from sklearn.base import BaseEstimator, DensityMixin, TransformerMixin
from sklearn.mixture import GaussianMixture
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
from actstats.stats.gaussian import top_eigen

__all__ = ["MixtureLayerModel", "fit_mixture", "parse_mixture_spec", "select_gaussian_mixture"]

#: Component counts tried by ``--mixture auto`` (capped by the number of rows).
AUTO_RANGE = (1, 2, 3, 4, 6, 8)


def parse_mixture_spec(spec: str | int) -> int | str:
    """Parse ``--mixture``: ``0`` (none), a component count ``K`` or ``auto`` (BIC)."""
    s = str(spec).strip().lower()
    if s == "auto":
        return "auto"
    try:
        k = int(s)
    except ValueError:
        k = -1
    if k < 0:
        raise ActstatsError(f"--mixture {spec!r} is not understood; use 0 (none), K >= 1 or auto")
    return k


def select_gaussian_mixture(
    Z: np.ndarray, n_components: int | str, *, random_state: int = 0, reg_covar: float = 1e-6
) -> GaussianMixture:
    """Fit a full-covariance ``GaussianMixture`` to ``Z``; ``"auto"`` picks K by lowest BIC.

    K is capped so each component has at least ``r + 1`` rows on average.
    """
    Z = np.asarray(Z, dtype=np.float64)
    n, r = Z.shape
    cap = max(1, n // (r + 1))
    ks = [k for k in AUTO_RANGE if k <= cap] if n_components == "auto" else [n_components]
    ks = [min(int(k), max(n, 1)) for k in ks] or [1]
    best, best_bic = None, np.inf
    for k in sorted(set(ks)):
        gm = GaussianMixture(
            n_components=k, covariance_type="full", reg_covar=reg_covar, random_state=random_state
        ).fit(Z)
        bic = gm.bic(Z) if len(ks) > 1 else 0.0
        if bic < best_bic:
            best, best_bic = gm, bic
    return best


class MixtureLayerModel(DensityMixin, TransformerMixin, BaseEstimator):
    """A Gaussian mixture in a reduced PCA basis of one layer.

    Fitted state: ``basis_mean_`` (D,), ``basis_`` (D, r), ``weights_`` (K,),
    ``means_`` (K, r), ``covariances_`` (K, r, r), plus ``mean_`` / ``variances_``
    (the layer's per-unit marginal mean and variance, for z-scores), ``n_samples_``
    and ``quantiles_`` where the fit pipeline set them.
    """

    kind = "mixture"

    def __init__(
        self, *, n_components: int | str = "auto", basis_dim: int = 32, random_state: int = 0
    ) -> None:
        self.n_components = n_components
        self.basis_dim = basis_dim
        self.random_state = random_state

    def fit(self, X: np.ndarray, y: object = None) -> MixtureLayerModel:
        """Fit to the rows of ``X`` (array-like of shape (n_samples >= 2, D)); returns ``self``.

        The basis is the top ``basis_dim`` principal directions of ``X`` (capped by D and
        n - 1), as the fit pipeline builds it from streamed moments; the mixture is fitted
        to the rows' coordinates in it and the per-unit marginals come from ``X`` itself.
        """
        X = validate_data(self, X, dtype=np.float64, ensure_min_samples=2)
        n, d = X.shape
        mean = X.mean(axis=0)
        r = int(max(1, min(self.basis_dim, d, n - 1)))
        basis = top_eigen(np.cov(X, rowvar=False, bias=True).reshape(d, d), r)[1]
        fitted = fit_mixture(
            (X - mean) @ basis, mean, basis, self.n_components, random_state=self.random_state
        )
        self.__dict__.update({k: v for k, v in fitted.__dict__.items() if k.endswith("_")})
        self.mean_, self.variances_ = mean, X.var(axis=0) + 1e-12
        self.n_samples_ = n
        return self

    @classmethod
    def from_gaussian_mixture(
        cls, gm: GaussianMixture, basis_mean: np.ndarray, basis: np.ndarray
    ) -> MixtureLayerModel:
        """Wrap a fitted full-covariance ``GaussianMixture`` over ``(x - basis_mean) @ basis``."""
        self = cls(n_components=gm.n_components)
        self.basis_mean_ = np.asarray(basis_mean, dtype=np.float64)
        self.basis_ = np.asarray(basis, dtype=np.float64)
        self.weights_ = np.asarray(gm.weights_, dtype=np.float64)
        self.means_ = np.asarray(gm.means_, dtype=np.float64)
        self.covariances_ = np.asarray(gm.covariances_, dtype=np.float64)
        mix_mean = self.weights_ @ self.means_
        total = np.einsum("k,kij->ij", self.weights_, self.covariances_)
        total += np.einsum("k,ki,kj->ij", self.weights_, self.means_, self.means_)
        total -= np.outer(mix_mean, mix_mean)
        self.mean_ = self.basis_mean_ + self.basis_ @ mix_mean
        self.variances_ = np.sum((self.basis_ @ total) * self.basis_, axis=1) + 1e-12
        return self

    def set_marginals(self, gaussian: Any) -> MixtureLayerModel:
        """Take the layer's per-unit mean, variance, sample count and quantiles from the
        Gaussian fitted to the same rows (exact where the mixture's basis is truncated), so
        z-scores agree whichever model a caller holds; returns ``self``."""
        self.mean_, self.variances_ = gaussian.mean_, gaussian.marginal_variances()
        self.n_samples_ = gaussian.n_samples_
        if hasattr(gaussian, "quantiles_"):
            self.quantiles_ = gaussian.quantiles_
            self.quantile_levels_ = gaussian.quantile_levels_
        return self

    # -- basis ---------------------------------------------------------------------------
    @property
    def n_features_(self) -> int:
        """Number of units D."""
        return int(self.basis_.shape[0])

    def transform(self, X: np.ndarray) -> np.ndarray:
        """Reduced coordinates ``(x - basis_mean_) @ basis_``, shape (n, r)."""
        return (as_rows(X, self.n_features_) - self.basis_mean_) @ self.basis_

    def inverse_transform(self, Z: np.ndarray) -> np.ndarray:
        """Back to the layer's units: ``basis_mean_ + z @ basis_.T``, shape (n, D)."""
        return self.basis_mean_ + np.atleast_2d(Z) @ self.basis_.T

    # -- components ----------------------------------------------------------------------
    def components(self) -> list[tuple[float, QuadraticFactors]]:
        """(weight, factors in the reduced basis) for each component."""
        f = self.__dict__.get("_components")
        if f is None:
            f = [
                (float(w), _factors(mu, C))
                for w, mu, C in zip(self.weights_, self.means_, self.covariances_, strict=True)
            ]
            self._components = f
        return f

    def _component_loglik(self, Z: np.ndarray) -> np.ndarray:
        return np.stack([np.log(w) + log_likelihood(f, Z) for w, f in self.components()], axis=1)

    def score_samples(self, X: np.ndarray) -> np.ndarray:
        """Log-density of each row's reduced coordinates, shape (n_samples,)."""
        return logsumexp(self._component_loglik(self.transform(X)), axis=1)

    def score(self, X: np.ndarray, y: object = None) -> float:
        """Mean of :meth:`score_samples`."""
        return float(np.mean(self.score_samples(X)))

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Component responsibilities, shape (n_samples, K)."""
        L = self._component_loglik(self.transform(X))
        return np.exp(L - logsumexp(L, axis=1, keepdims=True))

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Most responsible component of each row."""
        return np.argmax(self.predict_proba(X), axis=1)

    def mahalanobis(self, X: np.ndarray) -> np.ndarray:
        """Squared Mahalanobis distance (reduced basis) to each row's most responsible component."""
        Z = self.transform(X)
        k = np.argmax(self._component_loglik(Z), axis=1)
        comps = self.components()
        return np.array([squared_distance(comps[j][1], z)[0] for j, z in zip(k, Z, strict=True)])

    def unit_zscores(self, X: np.ndarray) -> np.ndarray:
        """Per-unit z-scores against the layer's marginal mean and variance, (n, D)."""
        return (as_rows(X, self.n_features_) - self.mean_) / np.sqrt(self.variances_)

    def unit_contributions(self, X: np.ndarray) -> np.ndarray:
        """Per-unit shares of :meth:`mahalanobis` (responsible component, back-projected), (n, D).

        With c the component's mean mapped to units and P its reduced precision, row
        ``x`` gets ``u * (B P B^T u)`` where ``u = x - c``; rows sum to :meth:`mahalanobis`.
        """
        X = as_rows(X, self.n_features_)
        Z = self.transform(X)
        k = np.argmax(self._component_loglik(Z), axis=1)
        out = np.empty_like(X)
        for j, (_, f) in enumerate(self.components()):
            rows = k == j
            if rows.any():
                U = X[rows] - self.inverse_transform(f.mean)
                out[rows] = U * (precision_dot(f, U @ self.basis_) @ self.basis_.T)
        return out

    def sample(self, n_samples: int = 1, random_state: object = None) -> np.ndarray:
        """Draw rows in the layer's units (reduced samples mapped back), shape (n_samples, D)."""
        rng = check_random_state(random_state)
        counts = rng.multinomial(n_samples, self.weights_ / self.weights_.sum())
        Z = np.concatenate(
            [
                rng.multivariate_normal(mu, C, size=c)
                for mu, C, c in zip(self.means_, self.covariances_, counts, strict=True)
            ]
        )
        return self.inverse_transform(Z[rng.permutation(n_samples)])

    # -- state ---------------------------------------------------------------------------
    def to_state(self) -> tuple[dict, dict[str, np.ndarray]]:
        """(JSON-able parameters, named arrays) for saving; see :meth:`from_state`."""
        names = ("basis_mean", "basis", "weights", "means", "covariances", "mean", "variances")
        arrays = {n: getattr(self, n + "_") for n in names}
        for n in ("quantiles", "quantile_levels"):
            if hasattr(self, n + "_"):
                arrays[n] = getattr(self, n + "_")
        return {"n_samples": int(getattr(self, "n_samples_", 0))}, arrays

    @classmethod
    def from_state(cls, params: dict, arrays: dict[str, np.ndarray]) -> MixtureLayerModel:
        """Rebuild a fitted model from :meth:`to_state` output."""
        self = cls(n_components=int(arrays["weights"].shape[0]))
        self.n_samples_ = int(params["n_samples"])
        for name, value in arrays.items():
            setattr(self, name + "_", value)
        return self

    def __repr__(self) -> str:
        if not hasattr(self, "weights_"):
            return "MixtureLayerModel()"
        return (
            f"MixtureLayerModel(K={len(self.weights_)}, D={self.n_features_}, "
            f"r={self.basis_.shape[1]})"
        )


def _factors(mean: np.ndarray, cov: np.ndarray) -> QuadraticFactors:
    L = np.linalg.cholesky(cov)
    U = scipy.linalg.solve_triangular(L, np.eye(L.shape[0]), lower=True).T
    return QuadraticFactors(mean, None, U, None, 2.0 * float(np.sum(np.log(np.diagonal(L)))))


def fit_mixture(
    Z: np.ndarray,
    basis_mean: np.ndarray,
    basis: np.ndarray,
    n_components: int | str = "auto",
    *,
    random_state: int = 0,
) -> MixtureLayerModel:
    """Fit a :class:`MixtureLayerModel` to reduced rows ``Z = (X - basis_mean) @ basis``.

    Parameters
    ----------
    Z : array-like of shape (n_samples, r)
    basis_mean : ndarray of shape (D,)
    basis : ndarray of shape (D, r)
    n_components : int or "auto"
        Number of components, or ``"auto"`` for the lowest BIC over :data:`AUTO_RANGE`.
    """
    Z = np.asarray(Z, dtype=np.float64)
    if Z.shape[0] < 2:
        raise ActstatsError("a mixture needs at least 2 rows; use --mixture 0 for this class")
    gm = select_gaussian_mixture(Z, n_components, random_state=random_state)
    return MixtureLayerModel.from_gaussian_mixture(gm, basis_mean, basis)
