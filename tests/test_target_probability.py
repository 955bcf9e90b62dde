"""p(target) for output units of a network without class names (a user's factory model)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import PlantedDigits
from scipy.special import softmax

from actstats.demo.digits import DIGITS_PREPROCESSING, digits_vgg
from actstats.io.modelfile import load_models
from actstats.net.network import Network
from actstats.pipeline.sample import sample_unit
from actstats.synth.methods import default_config


@pytest.fixture(scope="module")
def anonymous_net(digits_weights) -> Network:
    """The trained digits net as a factory model that names no classes."""
    module = digits_vgg()
    module.load_state_dict(torch.load(digits_weights, weights_only=True))
    return Network(module, "user.factory:net", "factory", DIGITS_PREPROCESSING, categories=None)


def test_output_layer_is_found_from_the_graph(anonymous_net: Network) -> None:
    assert anonymous_net.is_output("fc8") and anonymous_net.is_output("classifier.6")
    assert not anonymous_net.is_output("fc7") and not anonymous_net.is_output("conv3_2")


@pytest.mark.parametrize("logits", [None, "fc8"])
def test_output_units_report_their_probability(
    planted_digits: PlantedDigits, anonymous_net: Network, logits: str | None
) -> None:
    models = load_models(planted_digits.models)
    config = default_config("simonyan", steps=3)
    kw = {"class_name": "zero", "config": config, "logits": logits}
    (r,) = sample_unit(models, anonymous_net, "fc8:3", "simonyan", 1, **kw)
    x = DIGITS_PREPROCESSING.normalize(torch.from_numpy(r.image).permute(2, 0, 1)[None] / 255.0)
    with torch.inference_mode():
        ref = softmax(anonymous_net.module(x).double().numpy(), axis=1)[0, 3]
    assert r.target_probability == pytest.approx(ref, abs=0.02)
    (hidden,) = sample_unit(models, anonymous_net, "fc7:3", "simonyan", 1, **kw)
    assert hidden.target_probability is None
    assert np.isfinite(hidden.target_score)
