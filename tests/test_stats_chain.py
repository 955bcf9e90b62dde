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


def _joint(weights, means, covs, bases) -> JointModel:
    j = JointModel()
    j.layers_ = ("a", "b")
    j.basis_mean_a_, j.basis_a_, j.basis_mean_b_, j.basis_b_ = bases
    j.weights_, j.means_, j.covariances_ = (
        np.asarray(v, dtype=np.float64) for v in (weights, means, covs)
    )
    j.n_samples_ = 0
    return j


def _spd(rng: np.random.Generator, d: int, scale: float) -> np.ndarray:
    M = rng.normal(size=(d, d))
    return scale * (M @ M.T / d + 0.2 * np.eye(d))


def test_mixture_posterior_with_unequal_covariances_equals_scipy():
    """Overlapping components whose covariances differ 100x in scale: the posterior weights
    hinge on each component's log-determinant, so they must equal scipy's densities."""
    rng = np.random.default_rng(5)
    covs = [_spd(rng, 5, 0.1), _spd(rng, 5, 10.0), _spd(rng, 5, 1.0)]
    means = rng.normal(scale=0.3, size=(3, 5))
    j = _joint([0.5, 0.3, 0.2], means, covs, IDENT)
    c = j.conditional("a", "b")
    g = rng.normal(scale=[[0.5], [3.0], [1.0]], size=(3, 2))  # near the narrow, wide, middle
    dens = np.stack(
        [
            w * multivariate_normal(m[3:], S[3:, 3:]).pdf(g)
            for w, m, S in zip(j.weights_, means, covs, strict=True)
        ],
        1,
    )
    want = dens / dens.sum(1, keepdims=True)
    got = c.posterior_weights(g)
    np.testing.assert_allclose(got, want, rtol=1e-7, atol=1e-12)
    assert got.max(1).min() < 0.99  # no trivially one-hot rows: the test can tell weights apart
    # the mixture conditional mean and the sampled component frequencies follow these weights
    comp = [_brute(m, S, [3, 4], g)[0] for m, S in zip(means, covs, strict=True)]
    np.testing.assert_allclose(
        c.mean(g), sum(want[:, [k]] * comp[k] for k in range(3)), rtol=1e-7, atol=1e-9
    )
    draws = c.sample(g[1], n_samples=20000, random_state=0)
    expect_mean = sum(want[1, k] * comp[k][1] for k in range(3))
    np.testing.assert_allclose(draws.mean(0), expect_mean, atol=0.1)


def test_fixed_unit_is_pinned_exactly_by_matheron_update():
    """Condition a joint mixture on one unit of layer b (non-zero basis mean, rotated basis):
    every draw of layer b carries that unit at exactly the given value."""
    rng = np.random.default_rng(6)
    basis_a = np.linalg.qr(rng.normal(size=(4, 3)))[0]
    basis_b = np.linalg.qr(rng.normal(size=(3, 2)))[0]
    bases = (rng.normal(size=4) + 2.0, basis_a, rng.normal(size=3) - 2.3, basis_b)
    covs = [_spd(rng, 5, 1.0), _spd(rng, 5, 3.0)]
    j = _joint([0.6, 0.4], rng.normal(size=(2, 5)), covs, bases)
    for value in (0.7, -1.5):
        b_given_unit = j.conditional("b", ("b", 1))
        draws = b_given_unit.sample(value, n_samples=50, random_state=1)
        np.testing.assert_allclose(draws[:, 1], value, atol=1e-6)
        np.testing.assert_allclose(b_given_unit.mean(value)[:, 1], value, atol=1e-6)
    # and the other layer's draws follow the Gaussian brute force of each component (K=1)
    j1 = _joint([1.0], j.means_[:1], covs[:1], bases)
    a_given = j1.conditional("a", ("b", 1))
    # unit 1 of b is y @ H + c with H its basis row: condition y on that linear observation
    H = np.zeros((5, 1))
    H[3:, 0] = basis_b[1]
    m, S = condition_gaussian(j1.means_[0], covs[0], H, np.array([bases[2][1]]), np.array([[0.7]]))
    np.testing.assert_allclose(a_given.mean(0.7), bases[0] + m[:, :3] @ basis_a.T, atol=1e-8)
    draws = a_given.sample(0.7, n_samples=40000, random_state=0)
    np.testing.assert_allclose(draws.mean(0), (bases[0] + m[:, :3] @ basis_a.T)[0], atol=0.04)
    np.testing.assert_allclose(np.cov(draws.T), basis_a @ S[:3, :3] @ basis_a.T, atol=0.05)


def test_joint_gaussian_is_the_empirical_covariance_plus_its_ridge():
    """The fitted covariance is exactly np.cov (ddof 0) + 1e-6 * mean variance * I -- the
    ridge's sign and size checked, not only positive definiteness."""
    j = fit_joint_gaussian(moments_from_array(Y), ("a", "b"), IDENT)
    C = np.cov(Y, rowvar=False, bias=True)
    ridge = 1e-6 * np.trace(C) / len(C)
    np.testing.assert_allclose(j.covariances_[0], C + ridge * np.eye(len(C)), rtol=0, atol=1e-12)
    np.testing.assert_allclose(j.means_[0], Y.mean(axis=0), atol=1e-12)
    assert j.n_samples_ == N


def test_joint_mixture_records_its_row_count():
    j = fit_joint_mixture(Y[:500], ("a", "b"), IDENT, 2, random_state=0)
    assert j.n_samples_ == 500 and len(j.weights_) == 2


def test_joint_model_basis_is_capped_by_the_row_count():
    """With fewer rows than ``basis_dim``, each side keeps n - 1 directions (the rank of
    its centred rows), never directions of zero variance."""
    X = np.hstack([RNG.normal(size=(4, 6)), RNG.normal(size=(4, 5))])
    joint = JointModel(n_features_a=6, basis_dim=8).fit(X)
    assert joint.basis_a_.shape == (6, 3) and joint.basis_b_.shape == (5, 3)
