"""Objectives: composition, reference values, and every term's loss going down."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal
from torch import nn

from actstats.errors import ActstatsError
from actstats.net.network import Network, load_network
from actstats.net.preprocessing import Preprocessing
from actstats.net.reduce import parse_reduction
from actstats.stats.gaussian import GaussianLayerModel
from actstats.stats.mixture import fit_mixture
from actstats.synth import objectives as obj
from actstats.synth.param import pixel_image
from actstats.synth.render import render

TINY_PRE = Preprocessing(resize=8, crop=8, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))


class Tiny(nn.Module):
    """A VGG-shaped network small enough for finite differences: conv1_1, pool1, fc2."""

    actstats_preprocessing = TINY_PRE

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Softplus(), nn.MaxPool2d(2))
        self.classifier = nn.Sequential(nn.Linear(64, 6), nn.Tanh(), nn.Linear(6, 5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


def tiny_network(dtype: torch.dtype = torch.float32) -> Network:
    """Softplus/Tanh instead of ReLU so finite differences see smooth functions."""
    module = Tiny().to(dtype)
    net = load_network(module, device="cpu")
    net.aliases = {
        "conv1_1": "features.1",
        "pool1": "features.2",
        "fc2": "classifier.1",
        "fc3": "classifier.2",
    }
    return net


def real_rows(net: Network, layer: str, reduction: str, n: int = 200) -> np.ndarray:
    """Activations of random images, standing in for a class's real activations."""
    x = torch.randn(n, 3, 8, 8, generator=torch.Generator().manual_seed(1)) * 0.5
    with torch.no_grad():
        act = net.activations(x.to(next(net.module.parameters()).dtype), [layer])[layer]
    return obj.reduce_torch(act, reduction).double().numpy()


def objectives_for(net: Network) -> dict[str, obj.Objective]:
    """One instance of every objective term, fitted to the tiny network's activations."""
    rows = real_rows(net, "pool1", "grid:2")
    g = GaussianLayerModel(cov="full").fit(rows)
    fc = real_rows(net, "fc2", "full")
    g_fc = GaussianLayerModel(cov="lowrank:2").fit(fc)
    mean = fc.mean(0)
    evecs = np.linalg.svd(fc - mean, full_matrices=False)[2][:3].T
    mix = fit_mixture((fc - mean) @ evecs, mean, evecs, 2)
    std = rows.std(0)
    return {
        "unit": -1.0 * obj.unit("fc3", 2),
        "unit_conv": -1.0 * obj.unit("conv1_1", 1),
        "unit_conv_yx": -1.0 * obj.unit("conv1_1", 1, (2, 3)),
        "l2": obj.l2(),
        "tv": obj.total_variation(),
        "gaussian_prior": obj.gaussian_prior("pool1", g.quadratic_factors(), "grid:2"),
        "gaussian_lowrank": obj.gaussian_prior("fc2", g_fc.quadratic_factors()),
        "mixture_prior": obj.mixture_prior("fc2", mix.components(), mix.basis_mean_, mix.basis_),
        "match": obj.match_activations("pool1", rows[:1] + std, "grid:2", std),
        "outliers": obj.outlier_suppression(
            "pool1",
            rows.mean(0),
            std,
            lambda X: np.abs((X - rows.mean(0)) / std) > 0.5,
            "grid:2",
            every=3,
        ),
    }


def test_reduce_torch_is_the_collectors_reduction() -> None:
    x = torch.randn(2, 3, 6, 6)
    for reduction in ("full", "mean", "grid:2", "grid:3"):
        assert torch.equal(obj.reduce_torch(x, reduction), parse_reduction(reduction)(x))
    blocks = x.reshape(2, 3, 2, 3, 2, 3).mean(dim=(3, 5)).flatten(1)  # naive block means
    assert torch.allclose(obj.reduce_torch(x, "grid:2"), blocks)
    assert obj.reduce_torch(torch.ones(2, 5), "mean").shape == (2, 5)


def test_composition_and_descriptions() -> None:
    acts = {obj.INPUT: torch.randn(3, 3, 8, 8), "fc3": torch.randn(3, 5)}
    a, b = obj.unit("fc3", 1), obj.l2()
    assert torch.allclose((a + b)(acts), a(acts) + b(acts))
    assert torch.allclose((a - 2 * b)(acts), a(acts) - 2 * b(acts))
    assert torch.allclose((-a + 1.5)(acts), 1.5 - a(acts))
    assert torch.allclose(sum([a, b, b])(acts), a(acts) + 2 * b(acts))
    assert (a + b).layers == {"fc3", obj.INPUT}
    assert a.description == "unit('fc3', 1)"
    assert "unit('fc3', 1) + l2()" in (a + b).description
    assert (a + 0.0) is a and (0 + a) is a  # an off term (weight 0) adds nothing per step
    with pytest.raises(TypeError):
        a * b


def test_gaussian_prior_is_the_scipy_nll() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 4)) @ rng.normal(size=(4, 4))
    g = GaussianLayerModel(cov="full:empirical").fit(X)
    prior = obj.gaussian_prior("fc", g.quadratic_factors(), per_unit=False)
    got = prior({"fc": torch.as_tensor(X[:5])}).numpy()
    ref = -multivariate_normal(g.mean_, g.covariance_).logpdf(X[:5])
    np.testing.assert_allclose(got, ref, rtol=1e-8)
    per_unit = obj.gaussian_prior("fc", g.quadratic_factors())
    np.testing.assert_allclose(per_unit({"fc": torch.as_tensor(X[:5])}).numpy(), ref / 4)


@pytest.mark.parametrize("cov", ["diag", "lowrank:2"])
def test_gaussian_prior_is_the_scipy_nll_for_diagonal_and_low_rank_factors(cov: str) -> None:
    """The factored distances (``diag``; low rank: ``diag`` minus a Woodbury term) are
    the Gaussian NLL of the model's own covariance."""
    rng = np.random.default_rng(3)
    X = rng.normal(size=(400, 5)) @ rng.normal(size=(5, 5))
    g = GaussianLayerModel(cov=cov).fit(X)
    prior = obj.gaussian_prior("fc", g.quadratic_factors(), per_unit=False)
    got = prior({"fc": torch.as_tensor(X[:6])}).numpy()
    ref = -multivariate_normal(g.mean_, g.get_covariance()).logpdf(X[:6])
    np.testing.assert_allclose(got, ref, rtol=1e-8)


def test_priors_compute_in_the_activations_dtype_and_device() -> None:
    """A float32 (or float64) batch gets a loss of its own dtype, close to the float64
    reference; on the ``meta`` device (shapes only, no data) every cached tensor is
    made on the activations' device, or adding them would fail."""
    rng = np.random.default_rng(4)
    X = rng.normal(size=(300, 4)) @ rng.normal(size=(4, 4))
    g = GaussianLayerModel(cov="lowrank:2").fit(X)
    prior = obj.gaussian_prior("fc", g.quadratic_factors())
    ref = prior({"fc": torch.as_tensor(X[:3])})
    assert ref.dtype == torch.float64
    got = prior({"fc": torch.as_tensor(X[:3], dtype=torch.float32)})
    assert got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), ref.numpy(), rtol=1e-4)
    meta = {"fc": torch.empty(3, 4, device="meta")}
    assert prior(meta).device.type == "meta"
    term = obj.outlier_suppression("fc", np.zeros(4), np.ones(4), lambda Z: np.abs(Z) > 1)
    assert term(meta).device.type == "meta"  # nothing selected yet: zeros on the device


def test_gaussian_prior_with_row_means_and_scaled_covariance() -> None:
    rng = np.random.default_rng(1)
    X = rng.normal(size=(300, 3)) @ rng.normal(size=(3, 3))
    g = GaussianLayerModel(cov="full:empirical").fit(X)
    means = X[10:15]
    prior = obj.gaussian_prior(
        "fc", g.quadratic_factors(), per_unit=False, means=means, cov_scale=0.25
    )
    got = prior({"fc": torch.as_tensor(X[:5])}).numpy()
    ref = [
        -multivariate_normal(m, 0.25 * g.covariance_).logpdf(x)
        for m, x in zip(means, X[:5], strict=True)
    ]
    np.testing.assert_allclose(got, ref, rtol=1e-8)
    with pytest.raises(ActstatsError, match="cov_scale"):
        obj.gaussian_prior("fc", g.quadratic_factors(), cov_scale=0.0)


def test_gaussian_prior_with_dof_is_the_scipy_student_t_nll() -> None:
    """The heavy-tailed prior is the multivariate t of the Gaussian's mean and scale."""
    from scipy.stats import multivariate_t

    rng = np.random.default_rng(2)
    X = rng.normal(size=(300, 3)) @ rng.normal(size=(3, 3))
    g = GaussianLayerModel(cov="full:empirical").fit(X)
    far = X[:5] * 40.0  # out in the tail, where t and Gaussian part
    prior = obj.gaussian_prior("fc", g.quadratic_factors(), per_unit=False, dof=2.0, cov_scale=0.5)
    got = prior({"fc": torch.as_tensor(far)}).numpy()
    ref = -multivariate_t(g.mean_, 0.5 * g.covariance_, df=2.0 * 3).logpdf(far)
    np.testing.assert_allclose(got, ref, rtol=1e-8)
    gauss = obj.gaussian_prior("fc", g.quadratic_factors(), per_unit=False, cov_scale=0.5)
    assert np.all(got < gauss({"fc": torch.as_tensor(far)}).numpy())
    with pytest.raises(ActstatsError, match="dof"):
        obj.gaussian_prior("fc", g.quadratic_factors(), dof=0.0)


def test_mixture_prior_is_the_models_nll() -> None:
    rng = np.random.default_rng(1)
    X = np.concatenate([rng.normal(size=(150, 5)), rng.normal(size=(150, 5)) + 4])
    mean = X.mean(0)
    basis = np.linalg.svd(X - mean, full_matrices=False)[2][:3].T
    mix = fit_mixture((X - mean) @ basis, mean, basis, 2)
    prior = obj.mixture_prior("fc", mix.components(), mix.basis_mean_, mix.basis_, per_unit=False)
    got = prior({"fc": torch.as_tensor(X[:7])}).numpy()
    np.testing.assert_allclose(got, -mix.score_samples(X[:7]), rtol=1e-8)


def test_dimension_mismatch_is_a_clear_error() -> None:
    g = GaussianLayerModel(cov="diag").fit(np.random.default_rng(0).normal(size=(20, 3)))
    prior = obj.gaussian_prior("fc", g.quadratic_factors())
    with pytest.raises(ActstatsError, match=r"layer fc: 4 reduced activations .* has 3"):
        prior({"fc": torch.zeros(2, 4)})


def test_outlier_suppression_selects_then_descends() -> None:
    mean, std = np.zeros(4), np.ones(4)
    term = obj.outlier_suppression("fc", mean, std, lambda X: np.abs(X) > 3, every=2)
    x = torch.tensor([[5.0, 0.5, -4.0, 1.0]])
    assert term({"fc": x}).item() == 0.0  # nothing selected before the first refresh
    term.update({"fc": x}, 0)
    assert term({"fc": x}).item() == pytest.approx(0.5 * (25 + 16))
    term.update({"fc": torch.zeros(1, 4)}, 1)  # not a refresh step: selection kept
    assert term({"fc": x}).item() == pytest.approx(0.5 * (25 + 16))


def test_by_rows_applies_each_objective_to_its_rows() -> None:
    acts = {"fc3": torch.arange(10.0).reshape(2, 5)}
    both = obj.by_rows([obj.unit("fc3", 0), obj.unit("fc3", 4)], [1, 1])
    assert both(acts).tolist() == [0.0, 9.0]


def test_by_rows_refreshes_each_objective_on_its_own_rows() -> None:
    """Outlier selection inside a batched run: ``update`` on the combined objective
    re-selects each part's outliers from its own rows only."""
    parts = [
        obj.outlier_suppression("fc", np.zeros(2), np.ones(2), lambda Z: np.abs(Z) > 3, every=1)
        for _ in range(2)
    ]
    both = obj.by_rows(parts, [1, 2])
    x = torch.tensor([[5.0, 0.0], [0.0, 4.0], [1.0, 1.0]])
    assert both({"fc": x}).tolist() == [0.0, 0.0, 0.0]  # nothing selected before a refresh
    both.update({"fc": x}, 0)
    assert both({"fc": x}).tolist() == [12.5, 8.0, 0.0]
    assert both.description == " | ".join(p.description for p in parts)


#: Every objective term that ``objectives_for`` builds (also gradient-checked in test_gradcheck).
TERMS = [
    "unit",
    "unit_conv",
    "unit_conv_yx",
    "l2",
    "tv",
    "gaussian_prior",
    "gaussian_lowrank",
    "mixture_prior",
    "match",
    "outliers",
]


@pytest.mark.parametrize("name", TERMS)
def test_every_objective_goes_down(name: str) -> None:
    net = tiny_network()
    term = objectives_for(net)[name]
    param = pixel_image(
        2, 8, device=net.device, init="noise", std=0.5, generator=torch.Generator().manual_seed(0)
    )
    result = render(net, term, param, steps=12, lr=0.05)
    first, last = result.loss_history[0], result.loss_history[-1]
    assert np.all(last < first), (name, first, last)


def test_shallowest_keeps_the_leading_fraction_and_refuses_bad_fractions() -> None:
    from actstats.synth.priors import shallowest

    layers = [f"l{i}" for i in range(7)]
    for fraction in (0.01, 0.3, 0.6, 0.99, 1.0):
        count = max(1, int(np.ceil(fraction * 7 - 1e-12)))
        assert shallowest(layers, fraction, "prior_depth") == layers[:count]
    assert shallowest(layers, 0.6, "prior_depth") == layers[:5]  # VGG16: pool1..pool5 of 7
    assert shallowest([], 0.5, "match_depth") == []
    for bad in (0.0, -0.5, 1.5):
        with pytest.raises(ActstatsError, match=r"match_depth .*use 0 < match_depth <= 1"):
            shallowest(layers, bad, "match_depth")
