"""``actstats sample``: draw images for neurons from a fitted model file.

The model file is bound to its network, and the class whose statistics drive each
neuron chosen, by :mod:`actstats.pipeline.session`. The pieces, from pure to I/O:

* :func:`sample_units` / :func:`sample_unit` run a method for one or several
  neurons in one batch and measure every image (no files);
* :func:`run_sample` is the CLI's one call: open a session, sample, write
  (:func:`actstats.io.artifacts.write_samples`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from actstats.errors import ActstatsError
from actstats.eval.metrics import layer_nll, target_probability
from actstats.io.artifacts import SampleResult, write_samples
from actstats.io.generator import read_generator
from actstats.net.names import NeuronSpec, output_index, parse_neuron
from actstats.net.network import Network, ResolvedNeuron
from actstats.pipeline.session import Session, check_network, open_session
from actstats.stats.modelset import ALL_CLASSES, ModelSet
from actstats.synth.jobs import ClassStats, Job, unit_std
from actstats.synth.methods import default_config, synthesize
from actstats.synth.methods.base import RenderConfig
from actstats.synth.methods.generator import DecoderPrior
from actstats.synth.objectives import reduce_torch, unit_value
from actstats.synth.render import Progress

__all__ = ["load_decoder", "run_sample", "sample_unit", "sample_units"]


# ------------------------------------------------------------------ sampling
def sample_units(
    models: ModelSet,
    network: Network,
    neurons: Sequence[str | NeuronSpec],
    method: str,
    n: int,
    seed: int = 0,
    *,
    class_name: str | None = None,
    config: RenderConfig | None = None,
    progress: Progress | None = None,
    logits: str | None = None,
) -> list[list[SampleResult]]:
    """Sample ``n`` images for each neuron in one batch; one list of results per neuron.

    Checks the network against the model file first. Deterministic for a given
    ``seed`` on the CPU. ``logits`` names the layer that holds the network's class
    scores when it is not what ``forward`` returns (default: detected from the graph);
    samples of its units report their softmax probability.
    """
    if n < 1:
        raise ActstatsError(f"-n {n}: must be >= 1")
    session = Session(models, network)
    check_network(models, network)
    config = config or default_config(method)
    resolved = [
        network.resolve_neuron(parse_neuron(s) if isinstance(s, str) else s) for s in neurons
    ]
    names = [session.class_for_neuron(r, class_name) for r in resolved]
    stats = [session.class_stats(c) for c in names]
    jobs = [Job(r, s, n) for r, s in zip(resolved, stats, strict=True)]
    syn = synthesize(network, jobs, method, config=config, seed=seed, progress=progress)
    measured = _measure(network, syn.result.images, jobs, names, logits)
    total = sum(j.n for j in jobs)
    out = []
    for j, (job, rows) in enumerate(zip(jobs, syn.rows, strict=True)):
        results = []
        for k, row in enumerate(range(rows.start, rows.stop)):
            chain_match = {}
            if syn.chains:
                chain_match = {
                    ly: float(v[k])
                    for ly, v in _chain_match(
                        network, syn.result.images[rows], job, syn.chains[j]
                    ).items()
                }
            m = measured[row]
            results.append(
                SampleResult(
                    neuron=str(job.neuron),
                    class_name=names[j],
                    method=method,
                    index=k,
                    seed=seed,
                    image=network.preprocessing.to_uint8(syn.result.images[row][None])[0],
                    target_score=m["score"],
                    target_probability=m["prob"],
                    nll=m["nll"],
                    nll_per_unit=m["nll_per_unit"],
                    steps=syn.result.steps,
                    seconds=syn.result.seconds,
                    batch_size=total,
                    parameters=config.to_dict(),
                    loss_history=syn.result.loss_history[:, row].tolist(),
                    target_history=syn.target_history[:, row].tolist(),
                    chain_match=chain_match,
                )
            )
        out.append(results)
    return out


def sample_unit(
    models: ModelSet,
    network: Network,
    neuron: str | NeuronSpec,
    method: str,
    n: int,
    seed: int = 0,
    **kwargs: Any,
) -> list[SampleResult]:
    """:func:`sample_units` for one neuron (``class_name``, ``config``, ``progress``)."""
    return sample_units(models, network, [neuron], method, n, seed, **kwargs)[0]


def _target_class(
    network: Network, neuron: ResolvedNeuron, name: str, logits: str | None
) -> int | None:
    """The output index whose probability a sample reports; None where there is none.

    The class folder's output when the network names its classes (or it is an
    ImageNet wnid); else the unit itself when it is an output unit: a unit with a
    class name, a unit of the ``logits`` layer the user named, or of the layer
    whose output the network returns (detected from the graph).
    """
    cls = output_index(name, network.categories) if name != ALL_CLASSES else None
    if cls is not None:
        return cls
    if neuron.label is not None:
        return neuron.index
    if logits is not None:
        same = network.module_name(neuron.layer) == network.module_name(logits)
        return neuron.index if same else None
    return neuron.index if network.is_output(neuron.layer) else None


def _measure(
    network: Network,
    images: torch.Tensor,
    jobs: Sequence[Job],
    names: Sequence[str],
    logits_layer: str | None = None,
) -> list[dict[str, Any]]:
    """Final target score, class probability and per-layer NLL of every image."""
    x = images.to(network.device)
    out: list[dict[str, Any]] = []
    start = 0
    for job, name in zip(jobs, names, strict=True):
        stats = job.stats
        assert stats is not None
        extra = [logits_layer] if logits_layer else []
        layers = sorted({job.neuron.layer, *stats.layers, *extra})
        batch = x[start : start + job.n]
        with torch.inference_mode():
            acts = network.activations(batch, layers)
            raw = acts[logits_layer] if logits_layer else network.module(batch)
            logits = raw.flatten(1).double().cpu().numpy()
        score = unit_value(
            acts[job.neuron.layer], job.neuron.index, job.neuron.yx, job.neuron.layout
        )
        cls = _target_class(network, job.neuron, name, logits_layer)
        prob = target_probability(logits, cls) if cls is not None else None
        nll = {ly: layer_nll(stats.models[ly], _rows(acts[ly], stats, ly)) for ly in stats.layers}
        dims = {ly: _model_dim(stats.models[ly]) for ly in stats.layers}
        for i in range(job.n):
            out.append(
                {
                    "score": float(score[i]),
                    "prob": None if prob is None else float(prob[i]),
                    "nll": {ly: float(v[i]) for ly, v in nll.items()},
                    "nll_per_unit": {ly: float(v[i]) / dims[ly] for ly, v in nll.items()},
                }
            )
        start += job.n
    return out


def _rows(act: torch.Tensor, stats: ClassStats, layer: str) -> np.ndarray:
    return reduce_torch(act, stats.reductions.get(layer, "full")).double().cpu().numpy()


def _model_dim(model: Any) -> int:
    basis = getattr(model, "basis_", None)
    return int(basis.shape[1]) if basis is not None else int(model.n_features_)


def _chain_match(
    network: Network, images: torch.Tensor, job: Job, chain: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Mean squared z-distance of each image's activations to its sampled chain, per layer."""
    stats = job.stats
    assert stats is not None
    with torch.inference_mode():
        acts = network.activations(images.to(network.device), list(chain))
    return {
        ly: np.mean(
            ((_rows(acts[ly], stats, ly) - target) / unit_std(stats.models[ly])) ** 2, axis=1
        )
        for ly, target in chain.items()
    }


def run_sample(
    models_path: str | Path,
    neurons: Sequence[str],
    method: str,
    n: int,
    seed: int,
    output: str | Path,
    *,
    class_name: str | None = None,
    network: str | None = None,
    weights: str | None = None,
    device: str = "auto",
    steps: int | None = None,
    lr: float | None = None,
    prior_weight: float | None = None,
    layers: Sequence[str] | None = None,
    progress: Progress | None = None,
    overrides: Mapping[str, Any] | None = None,
    label: str | None = None,
    generator: str | Path | None = None,
    logits: str | None = None,
) -> list[Path]:
    """Open a session on the model file, sample every neuron, write the results.

    ``network``/``weights`` default to what the model file's provenance records;
    ``overrides`` sets any other field of the method's config (e.g. ``suppress_weight=0``);
    ``label`` names such a variant in ``samples.json`` (``method``; the method it ran is
    recorded as ``recipe``, with the ``overrides``). ``generator`` is the folder
    ``train-generator`` wrote (``method="generator"``). Returns one output folder per neuron.
    """
    decoder = load_decoder(generator) if generator is not None else None
    if method == "generator" and decoder is None:
        raise ActstatsError("--method generator needs --generator GEN (see train-generator)")
    session = open_session(models_path, network=network, weights=weights, device=device)
    config = default_config(
        method,
        **{
            "steps": steps,
            "lr": lr,
            "prior_weight": prior_weight,
            "layers": tuple(layers) if layers else None,
            "decoder": decoder if method == "generator" else None,
        }
        | dict(overrides or {}),
    )
    per_neuron = sample_units(
        session.models,
        session.network,
        neurons,
        method,
        n,
        seed,
        class_name=class_name,
        config=config,
        progress=progress,
        logits=logits,
    )
    extra = (
        {"method": label, "recipe": method, "overrides": dict(overrides or {})}
        if label is not None and label != method
        else None
    )
    return [write_samples(results, output, extra=extra) for results in per_neuron]


def load_decoder(path: str | Path) -> DecoderPrior:
    """A verified generator folder as the decoder ``--method generator`` uses."""
    generator, manifest = read_generator(path)
    return DecoderPrior(generator, manifest["layer"], manifest["reduction"])
