"""Realism metrics against independent computations (scipy, scikit-learn, numpy)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch
from PIL import Image
from scipy.stats import multivariate_normal
from sklearn.covariance import LedoitWolf

from actstats.demo.digits import DIGITS_JUDGE_LAYERS, DIGITS_NET_LAYERS
from actstats.errors import ActstatsError
from actstats.eval import realism
from actstats.eval.metrics import frechet_distance_between, memorization
from actstats.net.network import Network


def _naive_frechet(X: np.ndarray, Y: np.ndarray) -> float:
    """The textbook formula with scipy's sqrtm, no retries."""
    m1, m2 = X.mean(0), Y.mean(0)
    s1, s2 = np.cov(X, rowvar=False), np.cov(Y, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(np.sum((m1 - m2) ** 2) + np.trace(s1 + s2 - 2 * covmean))


def _uint8_images(root: Path, name: str, n: int | None = None) -> np.ndarray:
    paths = sorted((root / name).glob("*.png"))[:n]
    return np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths])


def test_frechet_matches_scipy_sqrtm_reference() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 6))
    Y = rng.normal(size=(150, 6)) @ rng.normal(size=(6, 6)) + 1.5
    assert frechet_distance_between(X, Y) == pytest.approx(_naive_frechet(X, Y), rel=1e-8)


def test_frechet_equal_covariances_is_squared_mean_distance() -> None:
    rng = np.random.default_rng(1)
    X = rng.normal(size=(300, 4))
    shift = np.array([1.0, -2.0, 0.5, 0.0])
    assert frechet_distance_between(X, X + shift) == pytest.approx(shift @ shift, rel=1e-6)


def test_pixel_gaussian_matches_ledoit_wolf_and_scipy_density() -> None:
    rng = np.random.default_rng(2)
    X = rng.normal(size=(20, 50)) @ rng.normal(size=(50, 50)) + 3.0
    Y = rng.normal(size=(7, 50)) * 2.0
    model = realism.fit_pixel_gaussian(X)
    reference = LedoitWolf().fit(X)
    assert model.shrinkage_ == pytest.approx(reference.shrinkage_, rel=1e-10)
    np.testing.assert_allclose(model.covariance(), reference.covariance_, atol=1e-10)
    expected = -multivariate_normal(reference.location_, reference.covariance_).logpdf(Y)
    np.testing.assert_allclose(model.nll(Y), expected, rtol=1e-10)


def test_pixel_gaussian_refuses_bad_input() -> None:
    with pytest.raises(ActstatsError, match="need >= 2 real images"):
        realism.fit_pixel_gaussian(np.zeros((1, 10)))
    with pytest.raises(ActstatsError, match="give no shrinkage"):
        realism.fit_pixel_gaussian(np.ones((5, 10)))
    model = realism.fit_pixel_gaussian(np.random.default_rng(0).normal(size=(5, 10)))
    with pytest.raises(ActstatsError, match="rows of 9 values, model has 10"):
        model.nll(np.zeros((2, 9)))


def test_pooled_features_are_spatial_means(digits_net: Network, digits_holdout_root: Path) -> None:
    images = _uint8_images(digits_holdout_root, "three", 5)
    feats = realism.pooled_features(digits_net, images, ["conv2_1", "fc7"], batch_size=2)
    x = realism.to_inputs(digits_net, images)
    with torch.no_grad():
        acts = digits_net.activations(x, ["conv2_1", "fc7"])
    np.testing.assert_allclose(
        feats["conv2_1"], acts["conv2_1"].mean(dim=(2, 3)).numpy(), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(feats["fc7"], acts["fc7"].numpy(), rtol=1e-5, atol=1e-6)


def test_real_images_measure_as_real_and_noise_does_not(
    digits_net: Network, judge_net: Network, digits_root: Path, digits_holdout_root: Path
) -> None:
    fit_images = _uint8_images(digits_root, "three")
    ref = realism.build_reference(
        digits_net,
        judge_net,
        3,
        fit_images,
        _uint8_images(digits_holdout_root, "three"),
        net_layers=DIGITS_NET_LAYERS,
        judge_layers=DIGITS_JUDGE_LAYERS,
    )
    real = realism.measure_images(fit_images[:8], ref, digits_net, judge_net)
    noise = np.random.default_rng(0).integers(0, 256, size=(8, 32, 32, 3), dtype=np.uint8)
    fake = realism.measure_images(noise, ref, digits_net, judge_net)
    assert real["target_probability"] > 0.9 and real["judge_agreement"] >= 0.75
    assert real["pixel_nll_ratio"] == pytest.approx(1.0, abs=0.1)
    # the real row's images are fitting-half images: each is its own nearest neighbour
    assert real["memorization_ratio"] == pytest.approx(0.0, abs=1e-9)
    assert fake["memorization_ratio"] > 0.5
    assert fake["pixel_nll_ratio"] > 2.0 and fake["pixel_nll_excess"] > 1.0
    for key in ("frechet_net", "frechet_judge"):
        assert set(real[key]) == set(fake[key])
        assert all(fake[key][ly] > real[key][ly] for ly in real[key])
    with pytest.raises(ActstatsError, match="need >= 2 images"):
        realism.measure_images(noise[:1], ref, digits_net, judge_net)


def test_summarize_averages_over_classes() -> None:
    def metrics(p: float, fd: float) -> dict:
        return {
            "target_probability": p,
            "judge_agreement": p,
            "pixel_nll_ratio": 2 * p,
            "pixel_nll_excess": p,
            "diversity_pixels": 1.0,
            "diversity_judge": 1.0,
            "memorization_ratio": p,
            "frechet_net": {"a": fd},
            "frechet_judge": {"b": 2 * fd},
        }

    summary = realism.summarize({"x": {"m": metrics(0.5, 1.0)}, "y": {"m": metrics(1.0, 3.0)}})
    assert summary["m"]["target_probability"] == pytest.approx(0.75)
    assert summary["m"]["min_target_probability"] == pytest.approx(0.5)
    assert summary["m"]["frechet_net"] == {"a": 2.0}
    assert summary["m"]["frechet_judge"] == {"b": 4.0}
    assert summary["m"]["classes"] == 2


def _naive_memorization(X: np.ndarray, A: np.ndarray, B: np.ndarray) -> np.ndarray:
    out = []
    for x in X:
        da = min(float(np.sqrt(np.sum((x - a) ** 2))) for a in A)
        db = min(float(np.sqrt(np.sum((x - b) ** 2))) for b in B)
        out.append(da / db)
    return np.asarray(out)


def test_memorization_matches_brute_force_and_flags_copies() -> None:
    rng = np.random.default_rng(0)
    fitted, held_out = rng.normal(size=(30, 5)), rng.normal(size=(30, 5))
    fresh = rng.normal(size=(200, 5))
    memo = memorization(fresh, fitted, held_out)
    np.testing.assert_allclose(memo.ratio, _naive_memorization(fresh, fitted, held_out))
    np.testing.assert_allclose(
        memo.distance_fit, np.linalg.norm(fresh - fitted[memo.nearest_fit], axis=1)
    )
    # new draws from the same distribution are as near one set as the other
    assert np.median(memo.ratio) == pytest.approx(1.0, abs=0.25)
    # copies of training images (plus a little noise) sit on their originals
    copies = memorization(fitted[:10] + 1e-3, fitted, held_out)
    assert np.all(copies.ratio < 0.05)
    np.testing.assert_array_equal(copies.nearest_fit, np.arange(10))
    # unequal sets are subsampled to the smaller size (seeded, deterministic)
    larger = rng.normal(size=(90, 5))
    big = memorization(fresh, larger, held_out, random_state=3)
    again = memorization(fresh, larger, held_out, random_state=3)
    np.testing.assert_array_equal(big.ratio, again.ratio)
    assert len(np.unique(big.nearest_fit)) <= 30  # neighbours come from 30 kept rows
    np.testing.assert_allclose(
        big.distance_fit, np.linalg.norm(fresh - larger[big.nearest_fit], axis=1)
    )
    with pytest.raises(ActstatsError, match="one width"):
        memorization(fresh, fitted[:, :3], held_out)
