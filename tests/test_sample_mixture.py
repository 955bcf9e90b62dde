"""Sampling from mixture-fitted models (``fit --mixture auto``, as the README's ImageNet
example runs it), and code-prior at the default steps the realism benchmark uses."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import actstats
from actstats.net.network import Network
from actstats.pipeline.sample import sample_units
from actstats.stats.chain import ConditionalMixture
from actstats.stats.mixture import MixtureLayerModel
from actstats.stats.modelset import ModelSet
from actstats.synth.methods import default_config
from actstats.synth.objectives import reduce_torch

LAYERS = ["conv2_1", "conv3_2", "fc6", "fc7", "fc8"]
REDUCE = {"conv2_1": "mean", "conv3_2": "grid:2"}
CLASSES = (3, 7)


@pytest.fixture(scope="module")
def models(fit_digits_models) -> ModelSet:
    path: Path = fit_digits_models(LAYERS, REDUCE, ["three", "seven"], mixture="auto")
    return actstats.load(path)


def test_mixture_fit_is_what_the_samplers_read(models) -> None:
    cm = models["three"]
    assert all(isinstance(cm[ly], MixtureLayerModel) for ly in LAYERS)
    assert max(len(cm[ly].weights_) for ly in LAYERS) > 1  # BIC chose several somewhere
    cond = cm.conditional("fc7", given=("fc8", 3))
    assert isinstance(cond, ConditionalMixture)
    top = cm.conditional("fc8", given=("fc8", 3)).sample(5.0, n_samples=4, random_state=0)
    np.testing.assert_allclose(top[:, 3], 5.0, atol=1e-6)  # the mixture's unit is pinned


@pytest.mark.parametrize("method", ["suppress", "ancestral"])
def test_sample_units_on_mixture_models(models, digits_net: Network, method: str) -> None:
    neurons = [f"fc8:{c}" for c in CLASSES]
    results = sample_units(
        models, digits_net, neurons, method, 2, seed=0, config=default_config(method, steps=150)
    )
    for c, per_neuron in zip(CLASSES, results, strict=True):
        probs = [r.target_probability for r in per_neuron]
        assert min(probs) > 0.9, (method, c, probs)
        for r in per_neuron:
            assert set(r.nll) >= set(LAYERS[:-1]) and all(np.isfinite(list(r.nll.values())))
    # the mixture's NLL of the images' shallow activations is the models' score_samples
    r = results[0][0]
    x = digits_net.preprocessing(Image.fromarray(r.image))[None]
    acts = digits_net.activations(x, ["conv3_2"])["conv3_2"]
    z = reduce_torch(acts, "grid:2").double().numpy()
    want = -models["three"]["conv3_2"].score_samples(z)[0]
    assert r.nll["conv3_2"] == pytest.approx(want, rel=0.05, abs=0.5)


def test_code_prior_reaches_the_claimed_probability(models, digits_net: Network) -> None:
    """README's realism table: code-prior p(target) 1.00 at its default steps."""
    results = sample_units(models, digits_net, ["fc8:3", "fc8:7"], "code-prior", 2, seed=0)
    probs = [r.target_probability for per in results for r in per]
    assert min(probs) > 0.99, probs
