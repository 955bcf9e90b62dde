"""The I/O edge of ``actstats saliency | localize | invert | dream``.

Each ``run_*`` loads the network (``--model/--weights``, or what a model file
records), reads one image, calls the pure function
(:mod:`actstats.saliency`, :mod:`actstats.localize`,
:mod:`actstats.synth.invert`, :mod:`actstats.synth.dream`) and writes PNGs,
``.npy`` and JSON. Maps and boxes are in pixels of the network input (the
resized, center-cropped image the network saw).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from actstats.data import BadImageError, load_image
from actstats.errors import ActstatsError
from actstats.layers import parse_neuron
from actstats.localize import localize
from actstats.models import ALL_CLASSES, ModelSet
from actstats.network import Network, load_network
from actstats.saliency import saliency_map
from actstats.synth.dream import DreamConfig, activation_energy, dream
from actstats.synth.invert import InvertConfig, activation_error, invert

__all__ = [
    "load_input",
    "open_network",
    "run_dream",
    "run_invert",
    "run_localize",
    "run_saliency",
]


def open_network(
    model: str | None, weights: str | None, models: str | Path | None, device: str = "auto"
) -> tuple[Network, ModelSet | None]:
    """The network (``model`` or the model file's) and the model file, if given."""
    fitted = None
    if models is not None:
        from actstats.models import load
        from actstats.sample import check_network

        fitted = load(models)
        model = model or fitted.provenance.get("model")
        weights = weights or fitted.provenance.get("weights")
    if not model:
        raise ActstatsError("--model: name the network (or pass --models MODELS_DIR)")
    network = load_network(model, weights, device=device)
    if fitted is not None:
        check_network(fitted, network)
    return network, fitted


def load_input(network: Network, path: str | Path) -> torch.Tensor:
    """One image file as a preprocessed batch (1, 3, crop, crop)."""
    try:
        image = load_image(path)
    except BadImageError as exc:
        raise ActstatsError(f"IMAGE {path}: {exc.reason}; pass a readable image file") from None
    return network.preprocessing(image)[None]


def _class_stats(fitted: ModelSet, network: Network, inputs: torch.Tensor, class_name: str | None):
    """``--class``, else the class the network predicts for the image (or the pooled model)."""
    from actstats.sample import class_stats

    if class_name is None:
        with torch.inference_mode():
            index = int(network.module(inputs.to(network.device)).argmax(1)[0])
        label = (network.categories or [])[index] if network.categories else None
        if label is not None and label in fitted.classes:
            class_name = label
        elif ALL_CLASSES in fitted.classes:
            class_name = ALL_CLASSES
        else:
            raise ActstatsError(
                f"--class: the predicted output {index} has no class folder in the model file; "
                f"pass --class NAME (available: {', '.join(fitted.classes[:20])})"
            )
    if class_name not in fitted.classes:
        raise ActstatsError(
            f"--class {class_name!r}: not in the model file; available: "
            f"{', '.join(fitted.classes[:20])}"
        )
    return class_stats(fitted, class_name)


def _figure() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def run_saliency(
    image: str | Path,
    neuron: str,
    output: str | Path,
    *,
    model: str | None = None,
    weights: str | None = None,
    models: str | Path | None = None,
    smoothgrad: int = 0,
    device: str = "auto",
) -> tuple[Path, Path]:
    """Write the heat map over the image (``output`` PNG) and the raw map (same stem, ``.npy``)."""
    network, _ = open_network(model, weights, models, device)
    inputs = load_input(network, image)
    resolved = network.resolve_neuron(parse_neuron(neuron))
    sal = saliency_map(network, inputs, resolved, smoothgrad=smoothgrad)[0].numpy()
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    npy = out.with_suffix(".npy")
    np.save(npy, sal)
    plt = _figure()
    fig, axes = plt.subplots(1, 2, figsize=(8, 4))
    rgb = network.preprocessing.to_uint8(inputs)[0]
    axes[0].imshow(rgb)
    axes[0].set_title(Path(image).name)
    axes[1].imshow(rgb)
    axes[1].imshow(sal, cmap="inferno", alpha=0.6)
    axes[1].set_title(
        f"saliency {resolved}" + (f" (SmoothGrad {smoothgrad})" if smoothgrad else "")
    )
    for ax in axes:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out, npy


def run_localize(
    image: str | Path,
    neuron: str,
    output: str | Path,
    *,
    model: str | None = None,
    weights: str | None = None,
    models: str | Path | None = None,
    smoothgrad: int = 0,
    device: str = "auto",
) -> Path:
    """Write ``mask.png``, ``box.json``, ``overlay.png`` and ``saliency.npy`` into ``output``."""
    network, _ = open_network(model, weights, models, device)
    inputs = load_input(network, image)
    resolved = network.resolve_neuron(parse_neuron(neuron))
    sal = saliency_map(network, inputs, resolved, smoothgrad=smoothgrad)[0].numpy()
    rgb = network.preprocessing.to_uint8(inputs)[0]
    loc = localize(rgb.astype(np.float64) / 255.0, sal)
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "saliency.npy", sal)
    Image.fromarray((loc.mask * 255).astype(np.uint8)).save(out / "mask.png")
    (out / "box.json").write_text(
        json.dumps({"image": str(image), "neuron": str(resolved), **loc.to_json()}, indent=1)
    )
    plt = _figure()
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.imshow(rgb)
    ax.imshow(np.ma.masked_where(~loc.mask, loc.mask), cmap="autumn", alpha=0.4)
    x0, y0, x1, y1 = loc.box
    ax.add_patch(
        plt.Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, color="lime", linewidth=2)
    )
    ax.set_title(f"{resolved}")
    ax.axis("off")
    fig.tight_layout()
    fig.savefig(out / "overlay.png")
    plt.close(fig)
    return out


def _write_pair(out: Path, name: str, network: Network, inputs: torch.Tensor, record: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    Image.fromarray(network.preprocessing.to_uint8(inputs)[0]).save(out / "input.png")
    (out / f"{name}.json").write_text(json.dumps(record, indent=1))


def run_invert(
    image: str | Path,
    layer: str,
    output: str | Path,
    *,
    model: str | None = None,
    weights: str | None = None,
    models: str | Path | None = None,
    class_name: str | None = None,
    config: InvertConfig | None = None,
    device: str = "auto",
) -> Path:
    """Write ``inverted.png`` (regularizers only), ``inverted_prior.png`` (with the fitted
    statistics, when ``models`` is given), ``input.png`` and ``invert.json`` into ``output``."""
    network, fitted = open_network(model, weights, models, device)
    inputs = load_input(network, image)
    config = config or InvertConfig()
    out = Path(output)
    variants = {"inverted": None}
    if fitted is not None:
        variants["inverted_prior"] = _class_stats(fitted, network, inputs, class_name)
    record: dict[str, Any] = {"image": str(image), "layer": layer, "config": vars(config)}
    with torch.inference_mode():
        target = network.activations(inputs.to(network.device), [layer])[layer]
    for name, stats in variants.items():
        result = invert(network, inputs, layer, stats=stats, config=config)
        out.mkdir(parents=True, exist_ok=True)
        Image.fromarray(network.preprocessing.to_uint8(result.images)[0]).save(out / f"{name}.png")
        record[name] = {
            "relative_error": float(activation_error(network, result.images, layer, target)[0]),
            "class": stats.name if stats is not None else None,
            "prior_layers": result.prior_layers,
        }
    _write_pair(out, "invert", network, inputs, record)
    return out


def run_dream(
    image: str | Path,
    layer: str,
    output: str | Path,
    *,
    model: str | None = None,
    weights: str | None = None,
    models: str | Path | None = None,
    class_name: str | None = None,
    config: DreamConfig | None = None,
    device: str = "auto",
) -> Path:
    """Write ``dream.png`` (and ``dream_prior.png`` with ``models``), ``input.png`` and
    ``dream.json`` (the layer's energy before and after) into ``output``."""
    network, fitted = open_network(model, weights, models, device)
    inputs = load_input(network, image)
    config = config or DreamConfig()
    out = Path(output)
    variants = {"dream": None}
    if fitted is not None:
        variants["dream_prior"] = _class_stats(fitted, network, inputs, class_name)
    record: dict[str, Any] = {
        "image": str(image),
        "layer": layer,
        "config": vars(config),
        "energy_before": float(activation_energy(network, inputs, layer)[0]),
    }
    for name, stats in variants.items():
        result = dream(network, inputs, layer, stats=stats, config=config)
        out.mkdir(parents=True, exist_ok=True)
        Image.fromarray(network.preprocessing.to_uint8(result.images)[0]).save(out / f"{name}.png")
        record[name] = {
            "energy": float(activation_energy(network, result.images, layer)[0]),
            "class": stats.name if stats is not None else None,
            "prior_layers": result.prior_layers,
        }
    _write_pair(out, "dream", network, inputs, record)
    return out
