"""``actstats sample``: draw images for neurons from a fitted model file.

The pieces, from pure to I/O:

* :func:`check_network` refuses a network whose weights or preprocessing differ
  from those the model file was fitted with;
* :func:`class_for_neuron` finds the class whose statistics drive a neuron
  (``--class``, else the output unit's class folder: digit names, or ImageNet
  wnids in the standard order shipped in ``actstats/resources/imagenet_wnids.txt``);
* :func:`sample_units` / :func:`sample_unit` run a method for one or several
  neurons in one batch and measure every image (no files);
* :func:`write_samples` writes PNGs, a grid and ``samples.json`` per neuron;
* :func:`run_sample` is the CLI's one call: load, check, sample, write.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from actstats.errors import ActstatsError
from actstats.evaluate import layer_nll, target_probability
from actstats.layers import NeuronSpec, parse_neuron
from actstats.models import ALL_CLASSES, ModelSet
from actstats.network import Network, ResolvedNeuron, load_network
from actstats.preprocessing import Preprocessing
from actstats.resources import read_text
from actstats.synth.objectives import reduce_torch, unit_value
from actstats.synth.recipes import (
    ClassStats,
    Job,
    SynthConfig,
    default_config,
    synthesize,
    unit_std,
)
from actstats.synth.render import Progress

__all__ = [
    "SampleResult",
    "check_network",
    "class_for_neuron",
    "class_stats",
    "imagenet_wnids",
    "run_sample",
    "sample_unit",
    "sample_units",
    "write_samples",
]

_WNID_RE = re.compile(r"^n\d{8}$")


@dataclass
class SampleResult:
    """One synthesized image and its measurements (``samples.json`` holds all but ``image``).

    ``image`` is (H, W, 3) uint8. ``target_probability`` is the softmax probability
    of the class the sample is for (None where the network has no class for it);
    ``nll[layer]`` the negative log-likelihood of the image's activations under the
    class model (``nll_per_unit`` divided by the layer's dimension); ``chain_match``
    (ancestral) the mean squared z-distance to the sampled activations per layer.
    ``seconds`` is the whole batch's time, shared by ``batch_size`` samples.
    """

    neuron: str
    class_name: str | None
    method: str
    index: int
    seed: int
    image: np.ndarray
    target_score: float
    target_probability: float | None
    nll: dict[str, float]
    nll_per_unit: dict[str, float]
    steps: int
    seconds: float
    batch_size: int
    parameters: dict[str, Any]
    loss_history: list[float]
    target_history: list[float]
    chain_match: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The JSON record (everything but the pixels)."""
        data = asdict(self)
        data.pop("image")
        data["class"] = data.pop("class_name")
        return data


# ------------------------------------------------------------------ checks
def check_network(models: ModelSet, network: Network) -> None:
    """Refuse a network that is not the one the model file was fitted with."""
    prov = models.provenance
    recorded = prov.get("weights_sha256")
    if recorded and recorded != network.weights_sha256:
        raise ActstatsError(
            f"--weights: network weights sha256 {network.weights_sha256[:12]}... differ from "
            f"the model file's {recorded[:12]}... (fitted with {prov.get('model')} "
            f"{prov.get('weights')}); pass the same --model/--weights or refit"
        )
    pre = prov.get("preprocessing")
    if pre and Preprocessing.from_dict(pre) != network.preprocessing:
        raise ActstatsError(
            f"preprocessing {network.preprocessing.to_dict()} differs from the model file's "
            f"{pre}; sample with the network the statistics were collected with"
        )


@cache
def imagenet_wnids() -> tuple[str, ...]:
    """The 1000 ImageNet-1k WordNet ids in output order (index 207 = ``n02099601``)."""
    text = read_text("imagenet_wnids.txt")
    return tuple(text.split())


def _class_folders(models: ModelSet) -> list[str]:
    return [c for c in models.classes if c != ALL_CLASSES]


def class_for_neuron(
    models: ModelSet, network: Network, neuron: ResolvedNeuron, class_name: str | None = None
) -> str:
    """The class whose statistics drive ``neuron``.

    ``class_name`` when given; for an output unit the class folder that
    corresponds to it (its category name, or its ImageNet wnid); for other units
    the statistics pooled over every class (``__all__``) when fitted.
    """
    folders = _class_folders(models)
    if class_name is not None:
        if class_name not in models.classes:
            raise ActstatsError(
                f"--class {class_name!r}: not in the model file; available: "
                f"{', '.join(folders[:20])}{' ...' if len(folders) > 20 else ''}"
            )
        return class_name
    if neuron.label is not None:
        found = _folder_for_output(folders, neuron)
        if found is not None:
            return found
        raise ActstatsError(
            f"--neuron {neuron}: no class folder corresponds to output {neuron.index} "
            f"({neuron.label!r}); pass --class NAME (available: {', '.join(folders[:20])})"
        )
    if ALL_CLASSES in models.classes:
        return ALL_CLASSES
    raise ActstatsError(
        f"--neuron {neuron}: not an output unit, so no class corresponds to it; "
        f"pass --class NAME (available: {', '.join(folders[:20])})"
    )


def _folder_for_output(folders: list[str], neuron: ResolvedNeuron) -> str | None:
    def norm(s: str) -> str:
        return s.lower().replace("_", " ").replace("-", " ").strip()

    by_name = {norm(f): f for f in folders}
    if neuron.label is not None and norm(neuron.label) in by_name:
        return by_name[norm(neuron.label)]
    wnids = imagenet_wnids()
    if folders and all(_WNID_RE.match(f) for f in folders) and neuron.index < len(wnids):
        wnid = wnids[neuron.index]
        return wnid if wnid in folders else None
    return None


def _class_index(network: Network, class_name: str) -> int | None:
    """Output index of a class folder, for its probability; None where unknown."""
    if _WNID_RE.match(class_name) and class_name in imagenet_wnids():
        return imagenet_wnids().index(class_name)
    cats = [c.lower().replace(" ", "_") for c in network.categories or []]
    key = class_name.lower().replace(" ", "_")
    return cats.index(key) if key in cats else None


def _reductions(models: ModelSet) -> dict[str, str]:
    out = {}
    for entry in models.provenance.get("layers", []):
        if isinstance(entry, dict):
            out[entry["name"]] = str(entry.get("reduce", entry.get("reduction", "full")))
    return out


def class_stats(models: ModelSet, class_name: str) -> ClassStats:
    """One class's statistics with the reductions the model file recorded."""
    cm = models[class_name]
    return ClassStats(class_name, cm, _reductions(models), list(cm.layers))


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
    config: SynthConfig | None = None,
    progress: Progress | None = None,
) -> list[list[SampleResult]]:
    """Sample ``n`` images for each neuron in one batch; one list of results per neuron.

    Checks the network against the model file first. Deterministic for a given
    ``seed`` on the CPU.
    """
    if n < 1:
        raise ActstatsError(f"-n {n}: must be >= 1")
    check_network(models, network)
    config = config or default_config(method)
    resolved = [
        network.resolve_neuron(parse_neuron(s) if isinstance(s, str) else s) for s in neurons
    ]
    names = [class_for_neuron(models, network, r, class_name) for r in resolved]
    stats = [class_stats(models, c) for c in names]
    jobs = [Job(r, s, n) for r, s in zip(resolved, stats, strict=True)]
    syn = synthesize(network, jobs, method, config=config, seed=seed, progress=progress)
    measured = _measure(network, syn.result.images, jobs, names)
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


def _measure(
    network: Network, images: torch.Tensor, jobs: Sequence[Job], names: Sequence[str]
) -> list[dict[str, Any]]:
    """Final target score, class probability and per-layer NLL of every image."""
    x = images.to(network.device)
    out: list[dict[str, Any]] = []
    start = 0
    for job, name in zip(jobs, names, strict=True):
        stats = job.stats
        assert stats is not None
        layers = sorted({job.neuron.layer, *stats.layers})
        with torch.inference_mode():
            acts = network.activations(x[start : start + job.n], layers)
            logits = network.module(x[start : start + job.n]).double().cpu().numpy()
        score = unit_value(acts[job.neuron.layer], job.neuron.index, job.neuron.yx)
        cls = _class_index(network, name) if name != ALL_CLASSES else None
        if cls is None and job.neuron.label is not None:
            cls = job.neuron.index
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


# ------------------------------------------------------------------ writing
def write_samples(results: Sequence[SampleResult], output: str | Path) -> Path:
    """Write one neuron's samples: ``sample_NNN.png``, ``grid.png``, ``samples.json``.

    Returns the folder ``output/<neuron>/`` (e.g. ``fc8_207``).
    """
    if not results:
        raise ActstatsError("no samples to write")
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", results[0].neuron)
    folder = Path(output) / slug
    folder.mkdir(parents=True, exist_ok=True)
    records = []
    for r in results:
        name = f"sample_{r.index:03d}.png"
        Image.fromarray(r.image).save(folder / name)
        records.append({"file": name, **r.to_json()})
    Image.fromarray(_grid([r.image for r in results])).save(folder / "grid.png")
    summary = {
        "neuron": results[0].neuron,
        "class": results[0].class_name,
        "method": results[0].method,
        "seed": results[0].seed,
        "parameters": results[0].parameters,
        "samples": records,
    }
    (folder / "samples.json").write_text(json.dumps(summary, indent=1))
    return folder


def _grid(images: Sequence[np.ndarray], pad: int = 2) -> np.ndarray:
    n = len(images)
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    h, w, _ = images[0].shape
    grid = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, 3), 255, np.uint8)
    for i, img in enumerate(images):
        r, c = divmod(i, cols)
        grid[
            pad + r * (h + pad) : pad + r * (h + pad) + h,
            pad + c * (w + pad) : pad + c * (w + pad) + w,
        ] = img
    return grid


def run_sample(
    models_path: str | Path,
    neurons: Sequence[str],
    method: str,
    n: int,
    seed: int,
    output: str | Path,
    *,
    class_name: str | None = None,
    model: str | None = None,
    weights: str | None = None,
    device: str = "auto",
    steps: int | None = None,
    lr: float | None = None,
    prior_weight: float | None = None,
    layers: Sequence[str] | None = None,
    progress: Progress | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> list[Path]:
    """Load the model file and its network, sample every neuron, write the results.

    ``model``/``weights`` default to what the model file's provenance records;
    ``overrides`` sets any other :class:`SynthConfig` field (e.g. ``suppress_weight=0``).
    Returns one output folder per neuron.
    """
    from actstats.models import load

    models = load(models_path)
    prov = models.provenance
    model = model or prov.get("model")
    if not model:
        raise ActstatsError(f"{models_path}: the model file records no network; pass --model")
    # The statistics hold for the preprocessing they were collected with (a store
    # collected at another input size than the weights' recipe, e.g. 32 px VGG).
    pre = prov.get("preprocessing")
    network = load_network(
        model,
        weights or prov.get("weights"),
        device=device,
        preprocessing=Preprocessing.from_dict(pre) if pre else None,
    )
    config = default_config(
        method,
        **{
            "steps": steps,
            "lr": lr,
            "prior_weight": prior_weight,
            "layers": tuple(layers) if layers else None,
        }
        | dict(overrides or {}),
    )
    per_neuron = sample_units(
        models,
        network,
        neurons,
        method,
        n,
        seed,
        class_name=class_name,
        config=config,
        progress=progress,
    )
    return [write_samples(results, output) for results in per_neuron]
