"""Conditionals (Schur complement, conditional mixtures, one unit given) against brute force."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import multivariate_normal

from actstats.errors import ActstatsError
from actstats.stats.chain import (
    JointModel,
    UnitConditionalGaussian,
    condition_gaussian,
    fit_joint_gaussian,
    fit_joint_mixture,
)
from actstats.stats.gaussian import GaussianLayerModel, moments_from_array

RNG = np.random.default_rng(2)
N = 4000
A = RNG.normal(size=(N, 3))
B = A @ RNG.normal(size=(3, 2)) + 0.4 * RNG.normal(size=(N, 2)) + 1.0
Y = np.hstack([A, B])
IDENT = (np.zeros(3), np.eye(3), np.zeros(2), np.eye(2))


def _brute(mean, cov, given_idx, g):
    """p(rest | y[given_idx] = g) by inverting the joint precision."""
    P = np.linalg.inv(cov)
    rest = [i for i in range(len(mean)) if i not in given_idx]
    Prr = P[np.ix_(rest, rest)]
    m = mean[rest] - (g - mean[given_idx]) @ np.linalg.solve(Prr, P[np.ix_(rest, given_idx)]).T
    return m, np.linalg.inv(Prr)


def test_gaussian_conditional_equals_brute_force():
    j = fit_joint_gaussian(moments_from_array(Y), ("a", "b"), IDENT)
    mu, C = j.means_[0], j.covariances_[0]
    c = j.conditional("a", "b")
    m, S = _brute(mu, C, [3, 4], B[:5])
    np.testing.assert_allclose(c.mean(B[:5]), m, rtol=1e-7, atol=1e-8)
    np.testing.assert_allclose(c.covariances()[0], S, rtol=1e-6, atol=1e-8)
    m2, _ = _brute(mu, C, [0, 1, 2], A[:5])  # the other direction: p(z_k+1 | z_k)
    np.testing.assert_allclose(j.conditional("b", "a").mean(A[:5]), m2, rtol=1e-7, atol=1e-8)
    draws = c.sample(B[0], n_samples=40000, random_state=0)
    np.testing.assert_allclose(draws.mean(0), m[0], atol=0.03)
    np.testing.assert_allclose(np.cov(draws.T), S, atol=0.03)


def test_regression_recovers_conditional_mean():
    j = fit_joint_gaussian(moments_from_array(Y), ("a", "b"), IDENT)
    design = np.hstack([B, np.ones((N, 1))])
    coef = np.linalg.lstsq(design, A, rcond=None)[0]  # least squares = Gaussian cond. mean
    # (up to the tiny ridge fit_joint_gaussian adds to keep the covariance definite)
    np.testing.assert_allclose(j.conditional("a", "b").mean(B[:10]), design[:10] @ coef, atol=1e-4)


def test_mixture_conditional_reweights_components():
    Y2 = np.vstack([Y, Y + 6.0])
    j = fit_joint_mixture(Y2, ("a", "b"), IDENT, 2)
    c = j.conditional("a", "b")
    g = Y2[[0, N], 3:]
    marg = np.stack(
        [
            w * multivariate_normal(m[3:], S[3:, 3:]).pdf(g)
            for w, m, S in zip(j.weights_, j.means_, j.covariances_, strict=True)
        ],
        1,
    )
    post = marg / marg.sum(1, keepdims=True)
    np.testing.assert_allclose(c.posterior_weights(g), post, atol=1e-8)
    comp = [_brute(m, S, [3, 4], g)[0] for m, S in zip(j.means_, j.covariances_, strict=True)]
    expect = post[:, [0]] * comp[0] + post[:, [1]] * comp[1]
    np.testing.assert_allclose(c.mean(g), expect, rtol=1e-7, atol=1e-8)
    assert c.sample(g, random_state=0).shape == (2, 3)


def test_unit_conditional_in_joint_and_layer():
    j = fit_joint_gaussian(moments_from_array(Y), ("a", "b"), IDENT)
    m, _ = _brute(j.means_[0], j.covariances_[0], [4], np.array([[2.0]]))
    np.testing.assert_allclose(j.conditional("a", ("b", 1)).mean(2.0), m[:, :3], atol=1e-8)
    for cov in ("full", "lowrank:2", "diag"):
        g = GaussianLayerModel(cov=cov).fit(Y)
        uc = UnitConditionalGaussian(g, 4)
        mb, Sb = _brute(g.mean_, g.get_covariance(), [4], np.array([[2.0], [0.0]]))
        np.testing.assert_allclose(np.delete(uc.mean([2.0, 0.0]), 4, axis=1), mb, atol=1e-8)
        draws = uc.sample(2.0, n_samples=30000, random_state=0)
        np.testing.assert_array_almost_equal(draws[:, 4], 2.0)
        np.testing.assert_allclose(np.delete(draws, 4, 1).mean(0), mb[0], atol=0.05)
        np.testing.assert_allclose(
            np.delete(np.delete(uc.covariances()[0], 4, 0), 4, 1), Sb, atol=1e-8
        )


def test_condition_gaussian_function_and_errors():
    mu, C = Y.mean(0), np.cov(Y.T)
    H = np.zeros((5, 2))
    H[3, 0] = H[4, 1] = 1.0
    m, _ = condition_gaussian(mu, C, H, np.zeros(2), B[:3])
    np.testing.assert_allclose(m[:, :3], _brute(mu, C, [3, 4], B[:3])[0], atol=1e-7)
    j = fit_joint_gaussian(moments_from_array(Y), ("a", "b"), IDENT)
    with pytest.raises(ActstatsError, match="given activations have 3 units; the layer has 2"):
        j.conditional("a", "b").mean(np.zeros(3))
    with pytest.raises(ActstatsError, match="unit index 9 is out of range"):
        j.conditional("a", ("b", 9))


def test_joint_model_fit_gives_the_regression_of_b_on_a():
    """In-memory ``fit`` with full bases: E[x_b | x_a] is the least-squares regression."""
    rng = np.random.default_rng(3)
    xa = rng.normal(size=(4000, 3))
    xb = xa @ rng.normal(size=(3, 2)) + 0.3 * rng.normal(size=(4000, 2)) + 1.0
    joint = JointModel(n_features_a=3, basis_dim=8).fit(np.hstack([xa, xb]))
    assert joint.layers_ == ("a", "b") and joint.n_samples_ == 4000
    A = np.hstack([xa, np.ones((len(xa), 1))])
    coef, *_ = np.linalg.lstsq(A, xb, rcond=None)  # the reference: ordinary least squares
    probe = rng.normal(size=(5, 3))
    expected = np.hstack([probe, np.ones((5, 1))]) @ coef
    np.testing.assert_allclose(joint.conditional("b", given="a").mean(probe), expected, atol=1e-3)
    with pytest.raises(ActstatsError, match="n_features_a=None"):
        JointModel().fit(np.hstack([xa, xb]))


def test_mixture_layer_model_fit_separates_two_clusters():
    """In-memory ``fit``: two well-separated clusters, each row assigned to its own."""
    from actstats.stats.mixture import MixtureLayerModel

    rng = np.random.default_rng(4)
    X = np.vstack([rng.normal(size=(300, 4)) - 5.0, rng.normal(size=(300, 4)) + 5.0])
    mix = MixtureLayerModel(n_components=2, basis_dim=4, random_state=0).fit(X)
    labels = mix.predict(X)
    assert len(set(labels[:300])) == 1 and len(set(labels[300:])) == 1
    assert labels[0] != labels[-1]
    np.testing.assert_allclose(mix.mean_, X.mean(axis=0))
    np.testing.assert_allclose(sorted(mix.weights_), [0.5, 0.5], atol=1e-6)
