"""Shared pieces of the fitted layer models: the quadratic-form contract and helpers.

:class:`QuadraticFactors` is the contract the synthesis code relies on: every
Gaussian layer model exposes ``quadratic_factors()``, every mixture layer model
``components()`` (weights and factors in its reduced basis), so a differentiable
negative log-likelihood can be written with sums of squares only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.utils import check_random_state

from actstats.errors import ActstatsError

__all__ = [
    "LOG_2PI",
    "QuadraticFactors",
    "as_rows",
    "check_random_state",
    "log_likelihood",
    "precision_dot",
    "squared_distance",
]

LOG_2PI = float(np.log(2.0 * np.pi))


@dataclass(frozen=True)
class QuadraticFactors:
    """Squared Mahalanobis distance as sums of squares, for differentiable use:
    d2(x) = ||(x - mean) * diag||^2 + ||(x - mean) @ plus||^2 - ||(x - mean) @ minus||^2
    diag: (D,) or None; plus: (D, R1) or None; minus: (D, R2) or None. float64 numpy."""

    mean: np.ndarray
    diag: np.ndarray | None
    plus: np.ndarray | None
    minus: np.ndarray | None
    log_det_cov: float  # so NLL = 0.5*(d2 + log_det_cov + D*log(2*pi))

    @property
    def dim(self) -> int:
        """Number of features D."""
        return int(self.mean.shape[0])


def as_rows(X: np.ndarray, dim: int, name: str = "X") -> np.ndarray:
    """Return ``X`` as a float64 array of shape (n, dim); a 1-D vector is one row.

    Raises
    ------
    ActstatsError
        If the last axis is not ``dim`` long.
    """
    X = np.asarray(X, dtype=np.float64)
    if X.ndim == 1:
        X = X[None, :]
    if X.ndim != 2 or X.shape[1] != dim:
        raise ActstatsError(
            f"{name} has shape {X.shape}; expected (n_samples, {dim}) for this layer model"
        )
    return X


def squared_distance(factors: QuadraticFactors, X: np.ndarray) -> np.ndarray:
    """Squared Mahalanobis distance of each row of ``X`` under ``factors``.

    Parameters
    ----------
    factors : QuadraticFactors
    X : array-like of shape (n_samples, D)

    Returns
    -------
    ndarray of shape (n_samples,)
    """
    Z = as_rows(X, factors.dim) - factors.mean
    d2 = np.zeros(Z.shape[0])
    if factors.diag is not None:
        d2 += np.sum((Z * factors.diag) ** 2, axis=1)
    if factors.plus is not None:
        d2 += np.sum((Z @ factors.plus) ** 2, axis=1)
    if factors.minus is not None:
        d2 -= np.sum((Z @ factors.minus) ** 2, axis=1)
    return np.maximum(d2, 0.0)


def precision_dot(factors: QuadraticFactors, Z: np.ndarray) -> np.ndarray:
    """Return ``Z @ P`` for centred rows ``Z`` where P is the precision encoded by ``factors``."""
    out = np.zeros_like(Z)
    if factors.diag is not None:
        out += Z * factors.diag**2
    if factors.plus is not None:
        out += (Z @ factors.plus) @ factors.plus.T
    if factors.minus is not None:
        out -= (Z @ factors.minus) @ factors.minus.T
    return out


def log_likelihood(factors: QuadraticFactors, X: np.ndarray) -> np.ndarray:
    """Gaussian log-density of each row: ``-0.5 * (d2 + log_det_cov + D log 2pi)``."""
    d2 = squared_distance(factors, X)
    return -0.5 * (d2 + factors.log_det_cov + factors.dim * LOG_2PI)
