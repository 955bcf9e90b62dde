"""Realism measures against references: scipy sqrtm, closed forms, scipy densities."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
from scipy.spatial.distance import pdist
from scipy.special import softmax
from scipy.stats import multivariate_normal

from actstats.errors import ActstatsError
from actstats.eval.metrics import (
    activation_statistics,
    diversity,
    frechet_distance,
    frechet_distance_between,
    judge_agreement,
    kernel_inception_distance,
    layer_nll,
    target_probability,
)
from actstats.stats.gaussian import GaussianLayerModel


def _naive_frechet(mu1, s1, mu2, s2) -> float:
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * covmean))


def _random_cov(rng: np.random.Generator, d: int) -> np.ndarray:
    a = rng.normal(size=(d, d))
    return a @ a.T + 0.1 * np.eye(d)


def test_frechet_matches_scipy_reference() -> None:
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    s1, s2 = _random_cov(rng, 6), _random_cov(rng, 6)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(
        _naive_frechet(mu1, s1, mu2, s2), rel=1e-8
    )


def test_frechet_closed_forms() -> None:
    rng = np.random.default_rng(1)
    s = _random_cov(rng, 5)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    assert frechet_distance(mu1, s, mu2, s) == pytest.approx(np.sum((mu1 - mu2) ** 2), abs=1e-7)
    assert frechet_distance(mu1, s, mu1, s) == pytest.approx(0.0, abs=1e-7)
    # 1-D: (m1 - m2)^2 + (sd1 - sd2)^2
    assert frechet_distance(
        np.array([1.0]), np.array([[4.0]]), np.array([3.0]), np.array([[9.0]])
    ) == pytest.approx(4.0 + 1.0)


def test_frechet_singular_covariances_retry_with_eps() -> None:
    rng = np.random.default_rng(2)
    X, Y = rng.normal(size=(3, 8)), rng.normal(size=(3, 8))  # fewer rows than dimensions
    with np.errstate(all="ignore"):
        d = frechet_distance_between(X, Y)
    assert np.isfinite(d) and d > 0


def test_frechet_refuses_bad_shapes() -> None:
    with pytest.raises(ActstatsError, match="shapes differ"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))
    with pytest.raises(ActstatsError, match=r"need \(n >= 2, D\)"):
        activation_statistics(np.zeros((1, 3)))


def test_layer_nll_is_scipy_nll() -> None:
    rng = np.random.default_rng(3)
    X = rng.normal(size=(400, 3)) @ rng.normal(size=(3, 3))
    g = GaussianLayerModel(cov="full:empirical").fit(X)
    ref = -multivariate_normal(g.mean_, g.covariance_).logpdf(X[:10])
    np.testing.assert_allclose(layer_nll(g, X[:10]), ref, rtol=1e-8)
    np.testing.assert_allclose(layer_nll(g, X[:10], per_unit=True), ref / 3, rtol=1e-8)


def test_probability_diversity_judge() -> None:
    rng = np.random.default_rng(4)
    logits = rng.normal(size=(6, 4))
    np.testing.assert_allclose(target_probability(logits, 2), softmax(logits, axis=1)[:, 2])
    F = rng.normal(size=(7, 5))
    assert diversity(F) == pytest.approx(pdist(F).mean())
    assert diversity(F[:1]) == 0.0
    judge = np.eye(4)[[2, 2, 1, 2]]
    assert judge_agreement(judge, 2) == 0.75


def _naive_kid(X: np.ndarray, Y: np.ndarray) -> float:
    """Bińkowski et al.'s unbiased MMD^2 with k(x, y) = (x.y / d + 1)^3, as double loops."""
    d = X.shape[1]

    def k(a: np.ndarray, b: np.ndarray) -> float:
        return (float(a @ b) / d + 1.0) ** 3

    n, m = len(X), len(Y)
    xx = sum(k(X[i], X[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    yy = sum(k(Y[i], Y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(X[i], Y[j]) for i in range(n) for j in range(m)) / (n * m)
    return xx + yy - 2.0 * xy


def test_kid_matches_double_loops_and_is_unbiased() -> None:
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(5, 4)), rng.normal(0.5, 1.0, size=(7, 4))
    assert kernel_inception_distance(X, Y) == pytest.approx(_naive_kid(X, Y), rel=1e-12)
    # same distribution: the unbiased estimate averages to 0 (a biased one stays > 0)
    same = [
        kernel_inception_distance(rng.normal(size=(4, 3)), rng.normal(size=(6, 3)))
        for _ in range(3000)
    ]
    assert abs(np.mean(same)) < 3 * np.std(same) / np.sqrt(len(same))
    assert kernel_inception_distance(X + 3.0, Y) > kernel_inception_distance(X, Y)
    with pytest.raises(ActstatsError, match="KID: need >= 2 rows"):
        kernel_inception_distance(X[:1], Y)
