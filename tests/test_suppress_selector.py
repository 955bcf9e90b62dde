"""The seed's outlier suppression as ``suppress`` builds it: which units it picks, and when.

The selector is checked against a direct ``|x - mean| / std > threshold`` computed from
each layer model's own parameters (a Gaussian's covariance diagonal, a mixture's total
covariance mapped back to units), and the refresh schedule against the steps it names.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from actstats.net.names import parse_neuron
from actstats.stats.gaussian import GaussianLayerModel
from actstats.stats.mixture import fit_mixture
from actstats.synth import objectives as obj
from actstats.synth.jobs import ClassStats, Job
from actstats.synth.methods.registry import default_config
from actstats.synth.methods.suppress import suppress_objective

sys.path.insert(0, str(Path(__file__).parent))
from test_objectives import real_rows, tiny_network

REDUCE = {"pool1": "grid:2", "fc2": "full"}
EVERY, THRESHOLD = 5, 1.5


def _mixture_std(m) -> np.ndarray:
    """Per-unit std of a mixture in a PCA basis, from its parameters (law of total variance)."""
    mix_mean = m.weights_ @ m.means_
    total = sum(
        w * (C + np.outer(mu - mix_mean, mu - mix_mean))
        for w, mu, C in zip(m.weights_, m.means_, m.covariances_, strict=True)
    )
    return np.sqrt(np.diag(m.basis_ @ total @ m.basis_.T))


@pytest.fixture(scope="module")
def setup():
    net = tiny_network()
    pool = real_rows(net, "pool1", "grid:2")
    fc = real_rows(net, "fc2", "full")
    g = GaussianLayerModel(cov="full").fit(pool)
    evecs = np.linalg.svd(fc - fc.mean(0), full_matrices=False)[2][:3].T
    mix = fit_mixture((fc - fc.mean(0)) @ evecs, fc.mean(0), evecs, 2)
    stats = ClassStats("c", {"pool1": g, "fc2": mix}, REDUCE, ["pool1", "fc2"])
    reference = {
        "pool1": (g.mean_, np.sqrt(np.diag(g.get_covariance()))),
        "fc2": (mix.inverse_transform(mix.weights_ @ mix.means_)[0], _mixture_std(mix)),
    }
    return net, stats, reference


def _acts(net, seed: int) -> dict[str, torch.Tensor]:
    x = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(seed)) * 1.5
    with torch.no_grad():
        return dict(net.activations(x, ["pool1", "fc2", "fc3"]))


def _direct(reference, acts, mask_acts) -> np.ndarray:
    """0.5 * sum of squared z-scores over the units outlying in ``mask_acts``."""
    total = np.zeros(3)
    for layer, (mean, std) in reference.items():
        z = (obj.reduce_torch(acts[layer], REDUCE[layer]).double().numpy() - mean) / std
        zm = (obj.reduce_torch(mask_acts[layer], REDUCE[layer]).double().numpy() - mean) / std
        total += 0.5 * np.sum(z**2 * (np.abs(zm) > THRESHOLD), axis=1)
    return total


def _objective(net, stats):
    config = default_config(
        "suppress",
        prior_weight=0.0,
        l2_weight=0.0,
        tv_weight=0.0,
        target_weight=0.0,
        suppress_weight=1.0,
        suppress_every=EVERY,
        suppress_threshold=THRESHOLD,
    )
    job = Job(net.resolve_neuron(parse_neuron("fc3:2")), stats, 3)
    return suppress_objective(net, job, config)


def test_selector_is_the_direct_z_threshold(setup) -> None:
    net, stats, reference = setup
    loss = _objective(net, stats)
    acts = _acts(net, 0)
    loss.update(acts, 0)
    np.testing.assert_allclose(loss(acts).numpy(), _direct(reference, acts, acts), rtol=1e-5)
    for layer, (mean, std) in reference.items():  # the test can tell none/all from some
        z = (obj.reduce_torch(acts[layer], REDUCE[layer]).double().numpy() - mean) / std
        picked = np.abs(z) > THRESHOLD
        assert 0 < picked.sum() < picked.size, (layer, picked.mean())


def test_selection_refreshes_exactly_every_few_steps(setup) -> None:
    """Feed new activations at every step; the penalized units are those of the last
    refresh step (0, 5, 10), probed on one fixed batch."""
    net, stats, reference = setup
    loss = _objective(net, stats)
    probe = _acts(net, 99)
    stream = [_acts(net, s + 1) for s in range(12)]
    for step, acts in enumerate(stream):
        loss.update(acts, step)
        chosen = stream[step - step % EVERY]
        np.testing.assert_allclose(
            loss(probe).numpy(), _direct(reference, probe, chosen), rtol=1e-5, err_msg=str(step)
        )
    assert not np.allclose(
        _direct(reference, probe, stream[0]), _direct(reference, probe, stream[5])
    )


def test_unrecorded_reduction_reads_the_layer_whole(setup) -> None:
    """A model file that recorded no reduction for a layer (older files) is read as
    ``full``: outlier suppression then sees the same units of a conv layer as with
    ``full`` named."""
    from actstats.synth.priors import outlier_suppression

    net, _, _ = setup
    model = GaussianLayerModel(cov="diag").fit(real_rows(net, "pool1", "full"))
    unrecorded = ClassStats("c", {"pool1": model}, {}, ["pool1"])
    named = ClassStats("c", {"pool1": model}, {"pool1": "full"}, ["pool1"])
    acts = _acts(net, 5)
    terms = [outlier_suppression(s, "pool1", 1.0, THRESHOLD, EVERY) for s in (unrecorded, named)]
    for term in terms:
        term.update(acts, 0)
    values = [term(acts) for term in terms]
    assert values[0].sum() > 0
    torch.testing.assert_close(values[0], values[1])


def test_prior_depth_outside_zero_one_names_the_option(setup) -> None:
    from actstats.errors import ActstatsError
    from actstats.synth.priors import prior_layers

    net, stats, _ = setup
    job = Job(net.resolve_neuron(parse_neuron("fc3:2")), stats, 1)
    assert prior_layers(net, job, None, 0.5) == ["pool1"]
    with pytest.raises(ActstatsError, match=r"prior_depth 0.0: use 0 < prior_depth <= 1"):
        prior_layers(net, job, None, 0.0)
