"""Mixture layer models against scikit-learn's GaussianMixture."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.mixture import GaussianMixture

from actstats.errors import ActstatsError
from actstats.stats.base import log_likelihood, squared_distance
from actstats.stats.mixture import MixtureLayerModel, fit_mixture, parse_mixture_spec

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
