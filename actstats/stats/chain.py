"""Joint models of adjacent layers and conditional distributions.

A :class:`JointModel` is a Gaussian (K = 1) or Gaussian mixture over
``y = [z_a, z_b]``, the reduced PCA coordinates of two adjacent layers
(``z = (x - basis_mean) @ basis``). Conditioning on a linear observation
``g = y @ H + c`` (a whole layer's reduced coordinates, or one unit's value) gives,
per component, the Schur-complement Gaussian

    mean = mu + (g - mu H - c) K^T,   K = S H (H^T S H)^-1,
    cov  = S - K H^T S,

and the component weights are reweighted by each component's marginal likelihood
of ``g``. Samples use Matheron's rule (draw ``y`` from the prior, then correct it by
``K``), which needs no factorisation of the (singular) conditional covariance.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.special import logsumexp

from actstats.errors import ActstatsError
from actstats.stats.base import LOG_2PI, check_random_state
from actstats.stats.gaussian import GaussianLayerModel, Moments, moments_from_array, top_eigen
from actstats.stats.mixture import select_gaussian_mixture

__all__ = [
    "ConditionalMixture",
    "JointModel",
    "UnitConditionalGaussian",
    "condition_gaussian",
    "fit_joint_gaussian",
    "fit_joint_mixture",
]

_JITTER = 1e-10


def condition_gaussian(
    mean: np.ndarray, cov: np.ndarray, H: np.ndarray, c: np.ndarray, g: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Mean (n, d) and covariance (d, d) of ``y ~ N(mean, cov)`` given ``y @ H + c = g``.

    Parameters
    ----------
    mean : (d,)
    cov : (d, d)
    H : (d, m)
    c : (m,)
    g : (n, m)
    """
    SH = cov @ H
    S = H.T @ SH
    S = S + _JITTER * max(float(np.trace(S)) / max(len(S), 1), 1.0) * np.eye(len(S))
    K = np.linalg.solve(S, SH.T).T
    return mean + (g - mean @ H - c) @ K.T, cov - K @ SH.T


class ConditionalMixture:
    """``p(x | g)`` where ``y`` is a Gaussian mixture, ``g = y @ H + c`` and ``x = y @ A + e``.

    Obtain one from :meth:`JointModel.conditional` or ``ClassModels.conditional``;
    ``given_values`` passed to :meth:`mean` / :meth:`sample` are in the caller's units
    (a layer's activations, or one unit's scalar values) and mapped by ``given_map``.
    """

    def __init__(
        self,
        weights: np.ndarray,
        means: np.ndarray,
        covariances: np.ndarray,
        H: np.ndarray,
        c: np.ndarray,
        A: np.ndarray,
        e: np.ndarray,
        given_map: Callable[[np.ndarray], np.ndarray],
    ) -> None:
        self.weights_, self.means_, self.covariances_ = weights, means, covariances
        self.H, self.c, self.A, self.e, self._given_map = H, c, A, e, given_map
        self._gains = []
        self._marg = []
        for C in covariances:
            SH = C @ H
            S = H.T @ SH
            S = S + _JITTER * max(float(np.trace(S)) / max(len(S), 1), 1.0) * np.eye(len(S))
            self._gains.append(np.linalg.solve(S, SH.T).T)
            self._marg.append(np.linalg.cholesky(S))

    def _g(self, given_values: np.ndarray) -> np.ndarray:
        g = self._given_map(given_values)
        if g.ndim != 2 or g.shape[1] != self.H.shape[1]:
            raise ActstatsError(
                f"given values map to shape {g.shape}; expected (n, {self.H.shape[1]})"
            )
        return g

    def posterior_weights(self, given_values: np.ndarray) -> np.ndarray:
        """Component weights given ``given_values``, shape (n, K)."""
        return self._posterior(self._g(given_values))

    def _posterior(self, g: np.ndarray) -> np.ndarray:
        logs = []
        for w, mu, L in zip(self.weights_, self.means_, self._marg, strict=True):
            r = np.linalg.solve(L, (g - mu @ self.H - self.c).T)
            ll = -0.5 * (np.sum(r**2, 0) + 2 * np.sum(np.log(np.diagonal(L))) + len(L) * LOG_2PI)
            logs.append(np.log(w) + ll)
        logs = np.stack(logs, axis=1)
        return np.exp(logs - logsumexp(logs, axis=1, keepdims=True))

    def _component_means(self, g: np.ndarray) -> list[np.ndarray]:
        return [
            mu + (g - mu @ self.H - self.c) @ K.T
            for mu, K in zip(self.means_, self._gains, strict=True)
        ]

    def mean(self, given_values: np.ndarray) -> np.ndarray:
        """Conditional mean of the target for each given row, shape (n, D_target)."""
        g = self._g(given_values)
        post = self._posterior(g)
        y = sum(post[:, [k]] * m for k, m in enumerate(self._component_means(g)))
        return y @ self.A + self.e

    def covariances(self) -> list[np.ndarray]:
        """Per-component conditional covariance of the target (it does not depend on ``g``)."""
        return [
            self.A.T @ (C - K @ (C @ self.H).T) @ self.A
            for C, K in zip(self.covariances_, self._gains, strict=True)
        ]

    def sample(
        self,
        given_values: np.ndarray,
        n_samples: int | None = None,
        random_state: object = None,
    ) -> np.ndarray:
        """Draw target rows given ``given_values``.

        One draw per given row, or ``n_samples`` draws for each given row (rows grouped
        by given row): shape (n_given * (n_samples or 1), D_target).
        """
        rng = check_random_state(random_state)
        g = self._g(given_values)
        if n_samples is not None:
            g = np.repeat(g, n_samples, axis=0)
        post = self._posterior(g)
        comp = np.array([rng.choice(len(p), p=p) for p in post])
        d = self.means_.shape[1]
        y = np.empty((len(g), d))
        for k in np.unique(comp):
            rows = comp == k
            C = self.covariances_[k]
            L = np.linalg.cholesky(C + _JITTER * max(np.trace(C) / d, 1.0) * np.eye(d))
            prior = self.means_[k] + rng.standard_normal((rows.sum(), d)) @ L.T
            y[rows] = prior + (g[rows] - prior @ self.H - self.c) @ self._gains[k].T
        return y @ self.A + self.e


class UnitConditionalGaussian:
    """``p(x | x_j = v)`` for a :class:`GaussianLayerModel` (any covariance form).

    Uses only column ``j`` of the covariance: mean ``mu + s (v - mu_j) / s_j``
    with ``s = cov[:, j]``; samples by Matheron's rule from the model's own sampler.
    Returned rows include unit ``j`` set to ``v``.
    """

    def __init__(self, model: GaussianLayerModel, index: int) -> None:
        if not 0 <= index < model.n_features_:
            raise ActstatsError(
                f"unit index {index} is out of range for a layer with {model.n_features_} units"
            )
        self.model, self.index = model, index
        self._col = model.covariance_column(index)
        self._gain = self._col / self._col[index]

    def _v(self, given_values: np.ndarray) -> np.ndarray:
        return np.asarray(given_values, dtype=np.float64).reshape(-1, 1)

    def mean(self, given_values: np.ndarray) -> np.ndarray:
        """Conditional mean for each given value, shape (n, D)."""
        mu = self.model.mean_
        return mu + (self._v(given_values) - mu[self.index]) * self._gain

    def covariances(self) -> list[np.ndarray]:
        """The conditional covariance (dense, D x D), as a one-element list."""
        return [
            self.model.get_covariance() - np.outer(self._col, self._col) / self._col[self.index]
        ]

    def sample(
        self, given_values: np.ndarray, n_samples: int | None = None, random_state: object = None
    ) -> np.ndarray:
        """Draws given the unit's value(s); shape (n_given * (n_samples or 1), D)."""
        v = self._v(given_values)
        if n_samples is not None:
            v = np.repeat(v, n_samples, axis=0)
        x = self.model.sample(len(v), random_state=random_state)
        return x + (v - x[:, [self.index]]) * self._gain


class JointModel:
    """A Gaussian (K = 1) or mixture over the reduced coordinates of two adjacent layers.

    Fitted state: ``layers_`` (name_a, name_b) (a shallower than b), ``basis_mean_a_``,
    ``basis_a_`` (D_a, r_a), ``basis_mean_b_``, ``basis_b_`` (D_b, r_b), ``weights_`` (K,),
    ``means_`` (K, r_a + r_b), ``covariances_`` (K, r_a + r_b, r_a + r_b), ``n_samples_``.
    """

    kind = "joint"

    def __init__(
        self,
        *,
        n_features_a: int | None = None,
        layers: tuple[str, str] = ("a", "b"),
        n_components: int | str = 1,
        basis_dim: int = 32,
        random_state: int = 0,
    ) -> None:
        self.n_features_a = n_features_a
        self.layers = layers
        self.n_components = n_components
        self.basis_dim = basis_dim
        self.random_state = random_state

    def fit(self, X: np.ndarray, y: object = None) -> JointModel:
        """Fit to rows ``X = [x_a, x_b]`` (n_samples, D_a + D_b), ``x_a`` the first
        ``n_features_a`` columns; returns ``self``.

        Each side gets the top ``basis_dim`` principal directions of its rows (capped by
        its width and n - 1), as the fit pipeline builds them; the joint model is a
        Gaussian (``n_components=1``) or a mixture of the stacked coordinates.
        """
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[0] < 2:
            raise ActstatsError(f"X has shape {X.shape}; expected (n_samples >= 2, D_a + D_b)")
        da = self.n_features_a
        if da is None or not 0 < da < X.shape[1]:
            raise ActstatsError(
                f"n_features_a={da}: give the width of the first layer (0 < D_a < {X.shape[1]})"
            )
        bases = (*_pca_basis(X[:, :da], self.basis_dim), *_pca_basis(X[:, da:], self.basis_dim))
        Y = np.hstack([(X[:, :da] - bases[0]) @ bases[1], (X[:, da:] - bases[2]) @ bases[3]])
        if self.n_components in (1, "1"):
            fitted = fit_joint_gaussian(moments_from_array(Y), tuple(self.layers), bases)
        else:
            fitted = fit_joint_mixture(
                Y, tuple(self.layers), bases, self.n_components, random_state=self.random_state
            )
        self.__dict__.update({k: v for k, v in fitted.__dict__.items() if k.endswith("_")})
        return self

    def _blocks(self) -> dict[str, tuple[slice, np.ndarray, np.ndarray]]:
        ra = self.basis_a_.shape[1]
        d = self.means_.shape[1]
        return {
            "a": (slice(0, ra), self.basis_mean_a_, self.basis_a_),
            "b": (slice(ra, d), self.basis_mean_b_, self.basis_b_),
        }

    def conditional(self, target: str, given: str | tuple[str, int]) -> ConditionalMixture:
        """``p(target | given)`` with ``target``/``given`` being ``"a"`` or ``"b"``.

        ``given`` is the other side's name (condition on its whole activation vector,
        through its reduced coordinates) or ``(side, unit_index)`` (one unit's value,
        approximated through the side's basis). The target is returned in its units.
        """
        blocks = self._blocks()
        d = self.means_.shape[1]
        t_sl, t_mean, t_basis = blocks[target]
        A = np.zeros((d, t_basis.shape[0]))
        A[t_sl] = t_basis.T
        if isinstance(given, tuple):
            side, j = given
            g_sl, g_mean, g_basis = blocks[side]
            if not 0 <= j < g_basis.shape[0]:
                raise ActstatsError(
                    f"unit index {j} is out of range for a layer with {g_basis.shape[0]} units"
                )
            H = np.zeros((d, 1))
            H[g_sl, 0] = g_basis[j]
            c = np.array([g_mean[j]])

            def given_map(v: np.ndarray) -> np.ndarray:
                return np.asarray(v, dtype=np.float64).reshape(-1, 1)

        else:
            g_sl, g_mean, g_basis = blocks[given]
            H = np.zeros((d, g_basis.shape[1]))
            H[g_sl] = np.eye(g_basis.shape[1])
            c = np.zeros(g_basis.shape[1])

            def given_map(v: np.ndarray) -> np.ndarray:
                v = np.asarray(v, dtype=np.float64)
                v = v[None, :] if v.ndim == 1 else v
                if v.shape[-1] != g_basis.shape[0]:
                    raise ActstatsError(
                        f"given activations have {v.shape[-1]} units; the layer has "
                        f"{g_basis.shape[0]}"
                    )
                return (v - g_mean) @ g_basis

        return ConditionalMixture(
            self.weights_, self.means_, self.covariances_, H, c, A, t_mean, given_map
        )

    def to_state(self) -> tuple[dict, dict[str, np.ndarray]]:
        """(JSON-able parameters, named arrays) for saving."""
        names = ("basis_mean_a", "basis_a", "basis_mean_b", "basis_b")
        arrays = {n: getattr(self, n + "_") for n in (*names, "weights", "means", "covariances")}
        return {"layers": list(self.layers_), "n_samples": int(self.n_samples_)}, arrays

    @classmethod
    def from_state(cls, params: dict, arrays: dict[str, np.ndarray]) -> JointModel:
        """Rebuild from :meth:`to_state` output."""
        self = cls()
        self.layers_ = tuple(params["layers"])
        self.n_samples_ = int(params["n_samples"])
        for name, value in arrays.items():
            setattr(self, name + "_", value)
        return self

    def __repr__(self) -> str:
        return f"JointModel(layers={getattr(self, 'layers_', None)}, K={len(self.weights_)})"


def _pca_basis(X: np.ndarray, basis_dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Row mean and the top ``basis_dim`` principal directions (D, r) of ``X``."""
    n, d = X.shape
    r = int(max(1, min(basis_dim, d, n - 1)))
    return X.mean(axis=0), top_eigen(np.cov(X, rowvar=False, bias=True).reshape(d, d), r)[1]


def _new_joint(layers: tuple[str, str], bases: tuple, n: int) -> JointModel:
    j = JointModel()
    j.layers_ = layers
    j.basis_mean_a_, j.basis_a_, j.basis_mean_b_, j.basis_b_ = bases
    j.n_samples_ = n
    return j


def fit_joint_gaussian(
    moments: Moments,
    layers: tuple[str, str],
    bases: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
) -> JointModel:
    """A K = 1 :class:`JointModel` from streamed moments of ``[z_a, z_b]`` rows.

    ``bases`` is (basis_mean_a, basis_a, basis_mean_b, basis_b). The covariance is the
    empirical (ddof = 0) one plus a small ridge so it stays positive definite.
    """
    if moments.n < 1:
        raise ActstatsError(f"no rows to fit the joint model of {layers[0]} and {layers[1]}")
    C = moments.covariance()
    d = len(C)
    C = C + max(1e-6 * float(np.trace(C)) / max(d, 1), 1e-12) * np.eye(d)
    j = _new_joint(layers, bases, moments.n)
    j.weights_, j.means_, j.covariances_ = np.ones(1), moments.mean[None, :], C[None]
    return j


def fit_joint_mixture(
    Y: np.ndarray,
    layers: tuple[str, str],
    bases: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    n_components: int | str,
    *,
    random_state: int = 0,
) -> JointModel:
    """A mixture :class:`JointModel` fitted to rows ``Y = [z_a, z_b]`` (n, r_a + r_b)."""
    gm = select_gaussian_mixture(Y, n_components, random_state=random_state)
    j = _new_joint(layers, bases, len(Y))
    j.weights_, j.means_, j.covariances_ = gm.weights_, gm.means_, gm.covariances_
    return j
