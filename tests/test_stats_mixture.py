"""Mixture layer models against scikit-learn's GaussianMixture."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import zscore
from sklearn.mixture import GaussianMixture

from actstats.errors import ActstatsError
from actstats.stats.base import log_likelihood, squared_distance
from actstats.stats.mixture import (
    AUTO_RANGE,
    MixtureLayerModel,
    fit_mixture,
    parse_mixture_spec,
    select_gaussian_mixture,
)

RNG = np.random.default_rng(1)
X = np.vstack([RNG.normal(size=(150, 6)), RNG.normal(size=(150, 6)) + 5.0])
BASIS = np.linalg.qr(RNG.normal(size=(6, 3)))[0]
BM = X.mean(0)
Z = (X - BM) @ BASIS


@pytest.fixture(scope="module")
def pair():
    gm = GaussianMixture(2, random_state=0).fit(Z)
    return gm, MixtureLayerModel.from_gaussian_mixture(gm, BM, BASIS)


def test_score_samples_equal_sklearn(pair):
    gm, m = pair
    np.testing.assert_allclose(m.score_samples(X), gm.score_samples(Z), rtol=1e-10)
    np.testing.assert_allclose(m.predict_proba(X), gm.predict_proba(Z), atol=1e-10)
    np.testing.assert_allclose(m.transform(X), Z)


def test_components_factors_are_each_components_gaussian(pair):
    gm, m = pair
    for k, (w, f) in enumerate(m.components()):
        assert w == pytest.approx(gm.weights_[k])
        diff = Z[:5] - gm.means_[k]
        d2 = np.einsum("ij,ij->i", diff, np.linalg.solve(gm.covariances_[k], diff.T).T)
        np.testing.assert_allclose(squared_distance(f, Z[:5]), d2, rtol=1e-8)
        assert f.log_det_cov == pytest.approx(np.linalg.slogdet(gm.covariances_[k])[1])
    mix = np.log(sum(w * np.exp(log_likelihood(f, Z[:5])) for w, f in m.components()))
    np.testing.assert_allclose(mix, gm.score_samples(Z[:5]), rtol=1e-9)


def test_outlier_scores_and_samples(pair):
    _, m = pair
    np.testing.assert_allclose(m.unit_contributions(X[:20]).sum(1), m.mahalanobis(X[:20]))
    assert m.unit_zscores(X[:4]).shape == (4, 6)
    S = m.sample(4000, random_state=0)
    assert S.shape == (4000, 6)
    proj = (S - BM) @ BASIS
    np.testing.assert_allclose(proj.mean(0), Z.mean(0), atol=0.2)


def test_auto_selects_two_components():
    assert len(fit_mixture(Z, BM, BASIS, "auto").weights_) == 2


def test_degenerate_mixture_is_finite():
    Y = np.vstack([np.zeros((5, 3)), np.ones((5, 3))])  # duplicate rows, constant per cluster
    m = fit_mixture(Y, np.zeros(3), np.eye(3), 2)
    assert np.all(np.isfinite(m.score_samples(Y)))


def test_bad_specs_raise():
    with pytest.raises(ActstatsError, match="--mixture 'x' is not understood"):
        parse_mixture_spec("x")
    with pytest.raises(ActstatsError, match="at least 2 rows"):
        fit_mixture(Z[:1], BM, BASIS, 1)
    assert parse_mixture_spec("auto") == "auto" and parse_mixture_spec(3) == 3


def test_integer_rows_score_as_their_float_values(pair):
    """Integer activations (a quantized layer) are converted, never truncated."""
    _, m = pair
    ints = np.rint(X[:5]).astype(np.int64)
    np.testing.assert_allclose(m.unit_contributions(ints), m.unit_contributions(ints * 1.0))
    np.testing.assert_allclose(m.unit_zscores(ints), m.unit_zscores(ints * 1.0))


def test_marginals_are_the_mixtures_moments(pair):
    """mean_ / variances_ against the law of total variance, V = sum_k w_k (C_k + d_k d_k^T)
    with d_k = mu_k - sum_j w_j mu_j, mapped to the units through the basis."""
    gm, m = pair
    centre = gm.weights_ @ gm.means_
    dev = gm.means_ - centre
    V = np.einsum("k,kij->ij", gm.weights_, gm.covariances_ + dev[:, :, None] * dev[:, None, :])
    np.testing.assert_allclose(m.mean_, BM + BASIS @ centre, rtol=1e-12)
    np.testing.assert_allclose(m.variances_, np.diag(BASIS @ V @ BASIS.T), rtol=1e-10)


def test_fitted_zscores_equal_scipy():
    m = MixtureLayerModel(n_components=2, basis_dim=3).fit(X)
    np.testing.assert_allclose(m.unit_zscores(X[:7]), zscore(X)[:7], rtol=1e-8)


def test_sample_default_size_and_seed(pair):
    _, m = pair
    assert m.sample().shape == (1, 6)
    np.testing.assert_array_equal(m.sample(5, random_state=0), m.sample(5, random_state=0))
    assert not np.array_equal(m.sample(5, random_state=0), m.sample(5, random_state=1))


def test_wrapped_mixture_round_trips_without_a_sample_count(pair):
    _, m = pair
    params, arrays = m.to_state()
    assert params == {"n_samples": 0}  # from_gaussian_mixture does not know N
    back = MixtureLayerModel.from_state(params, arrays)
    np.testing.assert_array_equal(back.score_samples(X[:5]), m.score_samples(X[:5]))


def test_fit_mixture_defaults_to_auto_and_accepts_two_rows():
    assert len(fit_mixture(Z, BM, BASIS).weights_) == 2  # "auto" picks the two clusters
    assert len(fit_mixture(Z[:2], BM, BASIS, 1).weights_) == 1


def test_auto_picks_the_lowest_bic_up_to_the_row_cap():
    """Six tight clusters of four rows in 3-D: the cap N // (r + 1) = 6 allows K = 6, the
    brute-force BIC minimum over AUTO_RANGE up to the cap."""
    rng = np.random.default_rng(2)
    centres = 100.0 * rng.normal(size=(6, 3))
    Y = np.repeat(centres, 4, axis=0) + rng.normal(size=(24, 3))
    bics = {
        k: GaussianMixture(k, covariance_type="full", reg_covar=1e-6, random_state=0).fit(Y).bic(Y)
        for k in AUTO_RANGE
        if k <= len(Y) // 4
    }
    assert select_gaussian_mixture(Y, "auto").n_components == min(bics, key=bics.get) == 6


def test_select_fits_in_float64_whatever_the_rows_dtype():
    """Stores hold float16/float32 activations; the mixture is fitted in float64."""
    gm32 = select_gaussian_mixture(Z.astype(np.float32), 2)
    gm64 = select_gaussian_mixture(Z.astype(np.float32).astype(np.float64), 2)
    np.testing.assert_allclose(gm32.means_, gm64.means_, rtol=1e-12)
