"""code-prior: codes stay inside DGN-AM's clip box and the target's probability rises."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import actstats
from actstats.errors import ActstatsError
from actstats.net.names import parse_neuron
from actstats.net.network import Network
from actstats.pipeline.sample import sample_units
from actstats.pipeline.session import class_stats
from actstats.synth.methods import METHODS, default_config
from actstats.synth.methods.code_prior import choose_code_layer, forward_from_code, optimize_code

LAYERS = ["conv3_2", "fc6", "fc7", "fc8"]


@pytest.fixture(scope="module")
def models_dir(fit_digits_models) -> Path:
    """Digits two and five, collected and fitted."""
    return fit_digits_models(LAYERS, {"conv3_2": "grid:2"}, ["two", "five"])


def test_codes_clipped_and_probability_rises(models_dir: Path, digits_net: Network) -> None:
    stats = class_stats(actstats.load(models_dir), "five")
    neuron = digits_net.resolve_neuron(parse_neuron("fc8:5"))
    assert choose_code_layer(digits_net, stats, neuron, None) == "fc6"
    code = optimize_code(digits_net, neuron, stats, 3, steps=40)
    assert (code.codes >= code.lower).all() and (code.codes <= code.upper).all()
    assert np.allclose(
        code.upper,
        np.maximum(
            stats.models["fc6"].mean_
            + 3 * np.sqrt(np.maximum(stats.models["fc6"].marginal_variances(), 1e-12)),
            0,
        ),
    )

    def prob(h: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            logits = forward_from_code(digits_net, "fc6", torch.as_tensor(h).float(), "fc8")
        return torch.softmax(logits, 1)[:, 5].numpy()

    with torch.inference_mode():
        blank = digits_net.activations(torch.zeros(1, 3, 32, 32), ["fc6"])["fc6"].double().numpy()
    print("p(five) blank code", prob(blank), "optimized", prob(code.codes))
    assert (prob(code.codes) > 0.99).all() and (prob(code.codes) > prob(blank)).all()


def test_sample_code_prior(models_dir: Path, digits_net: Network) -> None:
    assert "code-prior" in METHODS
    models = actstats.load(models_dir)
    results = sample_units(
        models,
        digits_net,
        ["fc8:2"],
        "code-prior",
        2,
        config=default_config("code-prior", steps=40),
    )[0]
    probs = [r.target_probability for r in results]
    print("code-prior decoded p(two)", probs, [r.chain_match for r in results])
    assert all(p > 0.5 for p in probs)
    assert all(set(r.chain_match) == {"fc6"} for r in results)
    with pytest.raises(ActstatsError, match="kept whole"):
        sample_units(
            models,
            digits_net,
            ["fc8:2"],
            "code-prior",
            1,
            config=default_config("code-prior", steps=2, layers=("conv3_2",)),
        )
