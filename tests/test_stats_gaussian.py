"""Streaming moments, shrinkage and Gaussian layer models against numpy/scipy/scikit-learn."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import multivariate_normal
from sklearn.covariance import OAS, LedoitWolf, ledoit_wolf_shrinkage

from actstats.errors import ActstatsError
from actstats.stats.base import (
    QuadraticFactors,
    as_rows,
    log_likelihood,
    precision_dot,
    squared_distance,
)
from actstats.stats.gaussian import (
    GaussianLayerModel,
    fit_gaussian,
    ledoit_wolf_shrinkage_from_moments,
    merge_moments,
    moments_from_array,
    oas_shrinkage_from_moments,
    parse_cov_spec,
    top_eigen,
)

RNG = np.random.default_rng(0)
X = RNG.normal(size=(97, 6)) @ RNG.normal(size=(6, 6)) + 100.0  # large offset: cancellation
FORMS = ["full", "full:oas", "full:empirical", "diag", "lowrank:2"]


def _streamed(X: np.ndarray, cuts: list[int], diag_only: bool = False):
    edges = [0, *sorted(set(cuts)), len(X)]
    parts = [moments_from_array(X[a:b], diag_only=diag_only) for a, b in itertools.pairwise(edges)]
    while len(parts) > 1:  # tree reduce, like fit
        parts = [
            merge_moments(*parts[i : i + 2]) if i + 1 < len(parts) else parts[i]
            for i in range(0, len(parts), 2)
        ]
    return parts[0]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(X)), max_size=8))
def test_merged_moments_equal_numpy(cuts):
    m = _streamed(X, cuts)
    E = X - X.mean(0)
    sq = np.sum(E**2, axis=1)
    assert m.n == len(X)
    np.testing.assert_allclose(m.mean, X.mean(0), rtol=1e-12)
    np.testing.assert_allclose(m.covariance(ddof=1), np.cov(X.T), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(m.t3, sq @ E, rtol=1e-7, atol=1e-6)
    np.testing.assert_allclose(m.q4, np.sum(sq**2), rtol=1e-9)
    np.testing.assert_array_equal(m.vmin, X.min(0))
    d = _streamed(X, cuts, diag_only=True)
    np.testing.assert_allclose(d.variances(ddof=1), np.var(X, axis=0, ddof=1), rtol=1e-9)


def test_shrinkage_equals_sklearn():
    for Y in (X, X[:5], RNG.normal(size=(40, 60))):  # includes N < D
        m = moments_from_array(Y)
        assert ledoit_wolf_shrinkage_from_moments(m) == pytest.approx(ledoit_wolf_shrinkage(Y))
        assert oas_shrinkage_from_moments(m) == pytest.approx(OAS().fit(Y).shrinkage_)
    lw = LedoitWolf().fit(X)
    g = fit_gaussian(moments_from_array(X), cov="full")
    floor = g.var_floor_ * np.eye(6)  # the variance floor is added on top of the shrunk estimate
    np.testing.assert_allclose(g.covariance_ - floor, lw.covariance_, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("cov", FORMS)
def test_loglik_and_factors_equal_dense_reference(cov):
    g = GaussianLayerModel(cov=cov).fit(X)
    C = g.get_covariance()
    ref = multivariate_normal(g.mean_, C)
    np.testing.assert_allclose(g.score_samples(X[:10]), ref.logpdf(X[:10]), rtol=1e-8)
    Z = X[:10] - g.mean_
    d2 = np.einsum("ij,ij->i", Z, np.linalg.solve(C, Z.T).T)
    f = g.quadratic_factors()
    np.testing.assert_allclose(squared_distance(f, X[:10]), d2, rtol=1e-7)
    np.testing.assert_allclose(g.mahalanobis(X[:10]), d2, rtol=1e-7)
    assert f.log_det_cov == pytest.approx(np.linalg.slogdet(C)[1], rel=1e-9)
    np.testing.assert_allclose(g.unit_contributions(X[:10]).sum(1), d2, rtol=1e-7)
    np.testing.assert_allclose(g.unit_zscores(X[:3]), Z[:3] / np.sqrt(np.diag(C)), rtol=1e-9)


def test_full_covariance_form_is_precision_cholesky():
    g = GaussianLayerModel(cov="full:empirical").fit(X)
    f = g.quadratic_factors()
    assert f.diag is None and f.minus is None
    np.testing.assert_allclose(f.plus @ f.plus.T, np.linalg.inv(g.covariance_), rtol=1e-6)


@pytest.mark.parametrize("cov", ["full", "lowrank:3", "diag"])
def test_sample_moments(cov):
    g = GaussianLayerModel(cov=cov).fit(X)
    S = g.sample(40000, random_state=0)
    np.testing.assert_allclose(
        S.mean(0), g.mean_, atol=0.1 * np.sqrt(np.diag(g.get_covariance())).max()
    )
    np.testing.assert_allclose(
        np.cov(S.T), g.get_covariance(), atol=0.05 * np.abs(g.get_covariance()).max()
    )


@pytest.mark.parametrize("cov", ["auto", *FORMS])
def test_degenerate_data_is_finite(cov):
    base = RNG.normal(size=(8, 30))
    base[:, 3] = 0.0  # dead unit
    base[:, 7] = 2.5  # constant unit
    Y = np.vstack([base, base[:2]])  # duplicate rows, N < D
    g = GaussianLayerModel(cov=cov).fit(Y)
    probe = np.vstack([Y[:2], Y[:2] + 1.0])
    for out in (
        g.score_samples(probe),
        g.mahalanobis(probe),
        g.unit_contributions(probe),
        g.unit_zscores(probe),
        g.sample(3, random_state=0),
    ):
        assert np.all(np.isfinite(out))
    assert np.all(
        np.isfinite(GaussianLayerModel(cov=cov).fit(np.ones((1, 4))).score_samples(probe[:, :4]))
    )


def test_auto_picks_lowrank_for_wide_layers():
    wide = moments_from_array(RNG.normal(size=(20, 50)))
    g = fit_gaussian(wide, cov="auto", full_max_dim=32)
    assert g.cov_type_ == "lowrank" and g.components_.shape[1] == 19
    assert fit_gaussian(wide, cov="auto").cov_type_ == "full"  # N < D: Ledoit-Wolf, not low-rank
    assert fit_gaussian(moments_from_array(X), cov="auto").cov_type_ == "full"


@pytest.mark.parametrize("cov", ["auto", "lowrank:8"])
def test_units_dead_in_the_fitting_rows_stay_plausible_held_out(cov):
    """ReLU-like layer, N < D, units that never fire on the fitting rows (fc6 of a class).

    Before the fix ``auto`` chose low-rank with K = D - 1: every residual variance
    fell to the floor and held-out rows scored thousands of nats per unit.
    """
    rng = np.random.default_rng(3)
    latent = rng.normal(size=(80, 6)) @ rng.normal(size=(6, 40))
    X = np.maximum(latent + 0.3 * rng.normal(size=latent.shape) - np.linspace(0.5, 6.0, 40), 0.0)
    fit, held = X[:30], X[30:]
    assert (fit.std(0) == 0).any() and (held[:, fit.std(0) == 0] > 0).any()
    g = fit_gaussian(moments_from_array(fit), cov=cov)
    nll_fit = -g.score_samples(fit).mean() / 40
    nll_held = -g.score_samples(held).mean() / 40
    assert g.shrinkage_ > 0
    assert nll_held < nll_fit + 5.0


def test_bad_specs_raise():
    with pytest.raises(ActstatsError, match="--cov 'lowrank:0' is not understood"):
        parse_cov_spec("lowrank:0")
    g = GaussianLayerModel(cov="diag").fit(X)
    with pytest.raises(ActstatsError, match=r"expected \(n_samples, 6\)"):
        g.score_samples(np.zeros((2, 5)))
    with pytest.raises(ActstatsError, match="0 rows"):
        fit_gaussian(moments_from_array(np.zeros((0, 3))))


def _documented_auto_form(n: int, d: int, full_max_dim: int) -> tuple[str, int]:
    """``fit_gaussian``'s docstring, spelled out: full if D <= full_max_dim, else low-rank
    with K = min(64, N - 1) components (at most D - 1), diagonal when no K >= 1 is left."""
    if d <= full_max_dim:
        return "full", d
    k = min(64, n - 1, d - 1)
    return ("lowrank", k) if k >= 1 else ("diag", d)


@pytest.mark.parametrize(
    ("n", "d", "full_max_dim"),
    [
        (20, 8, 8),  # D == full_max_dim: still full
        (20, 9, 8),  # one wider: low-rank, K = N - 1
        (30, 20, 8),  # N > D: K = D - 1
        (2, 6, 4),  # K = 1, the smallest low-rank model
        (1, 6, 4),  # one row: no K >= 1, diagonal
        (70, 70, 32),  # K capped at 64
    ],
)
def test_auto_form_follows_the_documented_rule(n, d, full_max_dim):
    m = moments_from_array(np.random.default_rng(n + d).normal(size=(n, d)))
    form, k = _documented_auto_form(n, d, full_max_dim)
    g = fit_gaussian(m, cov="auto", full_max_dim=full_max_dim)
    assert g.cov_type_ == form
    if form == "lowrank":
        assert g.components_.shape == (d, k)
    assert np.all(np.isfinite(g.score_samples(m.mean + 1.0)))


def test_shrinkage_edge_cases_equal_sklearn():
    rng = np.random.default_rng(5)
    cases = {
        "two features": rng.normal(size=(30, 2)),
        "two rows, two features (OAS capped at 1)": rng.normal(size=(2, 2)),
        "constant rows (LW beta = 0, OAS denominator = 0)": np.ones((4, 3)),
        "one feature": rng.normal(size=(20, 1)),
    }
    for name, Y in cases.items():
        m = moments_from_array(Y)
        lw = ledoit_wolf_shrinkage_from_moments(m)
        assert lw == pytest.approx(ledoit_wolf_shrinkage(Y), abs=1e-12), name
        assert oas_shrinkage_from_moments(m) == pytest.approx(OAS().fit(Y).shrinkage_), name
    assert OAS().fit(cases["two rows, two features (OAS capped at 1)"]).shrinkage_ == 1.0
    assert ledoit_wolf_shrinkage_from_moments(moments_from_array(np.zeros((0, 3)))) == 0.0


def test_full_empirical_is_numpy_covariance_plus_floor():
    g = GaussianLayerModel(cov="full:empirical").fit(X)
    assert g.shrinkage_ == 0.0
    ref = np.cov(X.T, bias=True) + g.var_floor_ * np.eye(6)
    np.testing.assert_allclose(g.covariance_, ref, rtol=1e-10)


@pytest.mark.parametrize(
    ("d", "k"), [(10, 0), (10, 1), (10, 3), (10, 10), (300, 4)]
)  # D = 300: the Lanczos branch
def test_top_eigen_equals_numpy(d, k):
    A = np.random.default_rng(d + k).normal(size=(d, d + 5))
    S = A @ A.T / d
    vals, vecs = top_eigen(S, k)
    assert vals.shape == (k,) and vecs.shape == (d, k)
    ref_vals, ref_vecs = np.linalg.eigh(S)
    np.testing.assert_allclose(vals, ref_vals[::-1][:k], rtol=1e-9)
    overlap = np.abs(vecs.T @ ref_vecs[:, ::-1][:, :k])
    np.testing.assert_allclose(overlap, np.eye(k), atol=1e-6)
    # the documented sign convention: each vector's largest-magnitude entry is positive
    assert np.all(vecs[np.argmax(np.abs(vecs), axis=0), np.arange(k)] > 0)


def test_top_eigen_clips_negative_and_keeps_small_eigenvalues():
    vals, vecs = top_eigen(np.diag([0.5, -1.0, 0.2]), 3)
    np.testing.assert_array_equal(vals, [0.5, 0.2, 0.0])
    np.testing.assert_array_equal(np.abs(vecs), np.eye(3)[:, [0, 2, 1]])


def _naive_lowrank(Y: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``fit_gaussian``'s low-rank model from scikit-learn's Ledoit-Wolf estimate and a
    dense eigendecomposition: (W W^T, residual variances before the floor)."""
    S = LedoitWolf().fit(Y).covariance_
    d = S.shape[0]
    vals, vecs = np.linalg.eigh(S)
    vals, vecs = vals[::-1][:k], vecs[:, ::-1][:, :k]
    sigma2 = (np.trace(S) - vals.sum()) / (d - k) if d > k else 0.0
    W = vecs * np.sqrt(np.maximum(vals - sigma2, 0.0))
    return W @ W.T, np.maximum(np.diag(S) - np.sum(W**2, axis=1), 0.0)


@pytest.mark.parametrize(
    ("Y", "k"),
    [
        (0.05 * X, 2),  # small variances: no constant 1 hides in a floor or a clip
        (X, 6),  # K = D: no residual
        (np.random.default_rng(7).normal(size=(5, 12)), 8),  # N < D, K beyond the rank
    ],
)
def test_lowrank_equals_naive_reference(Y, k):
    g = fit_gaussian(moments_from_array(Y), cov=f"lowrank:{k}")
    WWt, psi = _naive_lowrank(Y, k)
    assert g.cov_type_ == "lowrank" and g.var_floor_ > 0
    assert g.shrinkage_ == pytest.approx(ledoit_wolf_shrinkage(Y))
    np.testing.assert_allclose(g.components_ @ g.components_.T, WWt, rtol=1e-7, atol=1e-12)
    np.testing.assert_allclose(g.noise_variance_ - g.var_floor_, psi, atol=0.1 * g.var_floor_)


@pytest.mark.parametrize("cov", ["full", "diag", "lowrank:2"])
def test_sample_default_size_and_seed(cov):
    g = GaussianLayerModel(cov=cov).fit(X)
    assert g.sample().shape == (1, 6)
    np.testing.assert_array_equal(g.sample(5, random_state=0), g.sample(5, random_state=0))
    assert not np.array_equal(g.sample(5, random_state=0), g.sample(5, random_state=1))


def test_quadratic_factors_with_every_term_equal_the_dense_precision():
    """A :class:`QuadraticFactors` may carry diag, plus and minus at once (the contract
    allows it); each helper must equal its dense counterpart with P = diag^2 + plus plus^T
    - minus minus^T."""
    rng = np.random.default_rng(11)
    d = 5
    diag, plus, minus = 1.0 + rng.random(d), rng.normal(size=(d, 2)), 0.1 * rng.normal(size=(d, 1))
    P = np.diag(diag**2) + plus @ plus.T - minus @ minus.T
    mean = rng.normal(size=d)
    f = QuadraticFactors(mean, diag, plus, minus, -np.linalg.slogdet(P)[1])
    Y = rng.normal(size=(4, d))
    Z = Y - mean
    np.testing.assert_allclose(precision_dot(f, Z), Z @ P, rtol=1e-12)
    np.testing.assert_allclose(squared_distance(f, Y), np.einsum("ij,jk,ik->i", Z, P, Z))
    ref = multivariate_normal(mean, np.linalg.inv(P)).logpdf(Y)
    np.testing.assert_allclose(log_likelihood(f, Y), ref, rtol=1e-10)


def test_as_rows_names_the_array_and_converts_to_float64():
    with pytest.raises(ActstatsError, match=r"^X has shape \(2, 5\); expected \(n_samples, 6\)"):
        as_rows(np.zeros((2, 5)), 6)
    rows = as_rows(np.arange(6, dtype=np.int32), 6)
    assert rows.dtype == np.float64 and rows.shape == (1, 6)
