"""The I/O edge of ``actstats saliency | localize | invert | dream``.

Each ``run_*`` loads the network (``--network/--weights``, or what a model file
records, through :mod:`actstats.pipeline.session`), reads one image, calls the pure function
(:mod:`actstats.explain.saliency`, :mod:`actstats.explain.localize`,
:mod:`actstats.synth.methods.invert`, :mod:`actstats.synth.methods.dream`) and writes PNGs,
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

from actstats.errors import ActstatsError
from actstats.explain.localize import localize
from actstats.explain.saliency import clip_percentile, saliency_map
from actstats.explain.search import localize_by_search
from actstats.io.data import BadImageError, load_image
from actstats.net.names import parse_neuron
from actstats.net.network import Network, load_network
from actstats.pipeline.session import Session, open_session
from actstats.synth.methods.dream import DreamConfig, activation_energy, dream
from actstats.synth.methods.invert import InvertConfig, activation_error, invert

__all__ = [
    "load_input",
    "open_network",
    "run_dream",
    "run_invert",
    "run_localize",
    "run_saliency",
]


def open_network(
    network: str | None, weights: str | None, fitted: str | Path | None, device: str = "auto"
) -> tuple[Network, Session | None]:
    """The network, and the session on the fitted-models directory when one is given.

    With ``fitted`` the network defaults to the one the model file records, with its
    recorded preprocessing (:func:`~actstats.pipeline.session.open_session`).
    """
    if fitted is not None:
        session = open_session(fitted, network=network, weights=weights, device=device)
        return session.network, session
    if not network:
        raise ActstatsError(
            "--network (formerly --model): name the network, or pass --fitted MODELS"
        )
    return load_network(network, weights, device=device), None


def load_input(network: Network, path: str | Path) -> torch.Tensor:
    """One image file as a preprocessed batch (1, 3, crop, crop)."""
    try:
        image = load_image(path)
    except BadImageError as exc:
        raise ActstatsError(f"IMAGE {path}: {exc.reason}; pass a readable image file") from None
    return network.preprocessing(image)[None]


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
    network: str | None = None,
    weights: str | None = None,
    fitted: str | Path | None = None,
    smoothgrad: int = 0,
    percentile: float = 99.0,
    overlay: bool = False,
    kind: str = "gradient",
    device: str = "auto",
) -> tuple[Path, Path]:
    """Write the image beside its saliency heat map (``output``, always ``.png``) and the raw
    map (same stem, ``.npy``); return both paths.

    The map is shown as Simonyan et al. show it (their Fig. 2): on its own, scaled by
    its ``percentile``-th value and clipped there (:func:`clip_percentile`); ``overlay``
    adds a third panel with the clipped map over the image.
    """
    net, _ = open_network(network, weights, fitted, device)
    inputs = load_input(net, image)
    resolved = net.resolve_neuron(parse_neuron(neuron))
    sal = saliency_map(net, inputs, resolved, smoothgrad=smoothgrad, kind=kind)[0].numpy()
    heat = clip_percentile(sal, percentile)
    out = Path(output)
    if out.suffix.lower() != ".png":
        out = out.with_name(out.name + ".png")
    out.parent.mkdir(parents=True, exist_ok=True)
    npy = out.with_suffix(".npy")
    np.save(npy, sal)
    plt = _figure()
    panels = 3 if overlay else 2
    fig, axes = plt.subplots(1, panels, figsize=(3.6 * panels, 3.9))
    rgb = net.preprocessing.to_uint8(inputs)[0]
    axes[0].imshow(rgb)
    axes[0].set_title(Path(image).name, fontsize=9)
    shown = axes[1].imshow(heat, cmap="inferno", vmin=0.0, vmax=1.0)
    method = f"SmoothGrad {smoothgrad}, " if smoothgrad else ""
    axes[1].set_title(
        f"saliency of {resolved}\n({method}max_c |dS/dI|, clipped at p{percentile:g})", fontsize=9
    )
    fig.colorbar(shown, ax=axes[1], fraction=0.046, pad=0.04)
    if overlay:
        axes[2].imshow(rgb)
        axes[2].imshow(heat, cmap="inferno", alpha=0.6 * heat, vmin=0.0, vmax=1.0)
        axes[2].set_title("overlay", fontsize=9)
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
    network: str | None = None,
    weights: str | None = None,
    fitted: str | Path | None = None,
    smoothgrad: int = 0,
    windows: int = 0,
    kind: str | None = None,
    device: str = "auto",
) -> Path:
    """Write ``mask.png``, ``box.json``, ``overlay.png`` and ``saliency.npy`` into ``output``.

    ``windows`` 0 seeds the GraphCut with the whole frame's saliency (Simonyan et al.);
    N > 0 with the saliency of the N crops the network classifies best
    (:func:`actstats.explain.search.localize_by_search`), for objects that fill a small
    part of a cluttered frame. ``kind`` is the map that seeds it (default: ``gradient``
    on the whole frame, ``input-gradient`` in windows; see ``SALIENCY_KINDS``).
    ``saliency.npy`` is the whole frame's map either way.
    """
    net, _ = open_network(network, weights, fitted, device)
    inputs = load_input(net, image)
    resolved = net.resolve_neuron(parse_neuron(neuron))
    kind = kind or ("input-gradient" if windows else "gradient")
    sal = saliency_map(net, inputs, resolved, smoothgrad=smoothgrad, kind=kind)[0].numpy()
    rgb = net.preprocessing.to_uint8(inputs)[0]
    picture = rgb.astype(np.float64) / 255.0
    loc = (
        localize_by_search(
            net, inputs, picture, resolved, windows=windows, kind=kind, smoothgrad=smoothgrad
        )
        if windows
        else localize(picture, sal)
    )
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "saliency.npy", sal)
    Image.fromarray((loc.mask * 255).astype(np.uint8)).save(out / "mask.png")
    (out / "box.json").write_text(
        json.dumps(
            {
                "image": str(image),
                "neuron": str(resolved),
                "windows": windows,
                "kind": kind,
                **loc.to_json(),
            },
            indent=1,
        )
    )
    plt = _figure()
    fig, axes = plt.subplots(1, 2, figsize=(7.2, 3.9))
    x0, y0, x1, y1 = loc.box
    axes[0].imshow(rgb)
    axes[0].imshow(np.ma.masked_where(~loc.mask, loc.mask), cmap="autumn", alpha=0.4)
    axes[0].set_title(f"{resolved}: object mask and box", fontsize=9)
    axes[1].imshow(clip_percentile(sal), cmap="inferno", vmin=0.0, vmax=1.0)
    axes[1].set_title("saliency, clipped at p99", fontsize=9)
    for ax in axes:
        ax.add_patch(
            plt.Rectangle(
                (x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, color="lime", linewidth=2
            )
        )
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(out / "overlay.png")
    plt.close(fig)
    return out


def _write_pair(out: Path, name: str, net: Network, inputs: torch.Tensor, record: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    Image.fromarray(net.preprocessing.to_uint8(inputs)[0]).save(out / "input.png")
    (out / f"{name}.json").write_text(json.dumps(record, indent=1))


def run_invert(
    image: str | Path,
    layer: str,
    output: str | Path,
    *,
    network: str | None = None,
    weights: str | None = None,
    fitted: str | Path | None = None,
    class_name: str | None = None,
    config: InvertConfig | None = None,
    device: str = "auto",
) -> Path:
    """Write ``inverted.png`` (regularizers only), ``inverted_prior.png`` (with the fitted
    statistics, when ``fitted`` is given), ``input.png`` and ``invert.json`` into ``output``."""
    net, session = open_network(network, weights, fitted, device)
    inputs = load_input(net, image)
    config = config or InvertConfig()
    out = Path(output)
    variants = {"inverted": None}
    if session is not None:
        variants["inverted_prior"] = session.class_stats(
            session.class_for_image(inputs, class_name)
        )
    record: dict[str, Any] = {"image": str(image), "layer": layer, "config": vars(config)}
    with torch.inference_mode():
        target = net.activations(inputs.to(net.device), [layer])[layer]
    for name, stats in variants.items():
        result = invert(net, inputs, layer, stats=stats, config=config)
        out.mkdir(parents=True, exist_ok=True)
        Image.fromarray(net.preprocessing.to_uint8(result.images)[0]).save(out / f"{name}.png")
        record[name] = {
            "relative_error": float(activation_error(net, result.images, layer, target)[0]),
            "class": stats.name if stats is not None else None,
            "prior_layers": result.prior_layers,
        }
    _write_pair(out, "invert", net, inputs, record)
    return out


def run_dream(
    image: str | Path,
    layer: str,
    output: str | Path,
    *,
    network: str | None = None,
    weights: str | None = None,
    fitted: str | Path | None = None,
    class_name: str | None = None,
    config: DreamConfig | None = None,
    device: str = "auto",
) -> Path:
    """Write ``dream.png`` (and ``dream_prior.png`` with ``fitted``), ``input.png`` and
    ``dream.json`` (the layer's energy before and after) into ``output``."""
    net, session = open_network(network, weights, fitted, device)
    inputs = load_input(net, image)
    config = config or DreamConfig()
    out = Path(output)
    variants = {"dream": None}
    if session is not None:
        chosen = session.class_for_image(inputs, class_name)
        variants["dream_prior"] = session.class_stats(chosen)
    record: dict[str, Any] = {
        "image": str(image),
        "layer": layer,
        "config": vars(config),
        "energy_before": float(activation_energy(net, inputs, layer)[0]),
    }
    for name, stats in variants.items():
        result = dream(net, inputs, layer, stats=stats, config=config)
        out.mkdir(parents=True, exist_ok=True)
        Image.fromarray(net.preprocessing.to_uint8(result.images)[0]).save(out / f"{name}.png")
        record[name] = {
            "energy": float(activation_energy(net, result.images, layer)[0]),
            "class": stats.name if stats is not None else None,
            "prior_layers": result.prior_layers,
        }
    _write_pair(out, "dream", net, inputs, record)
    return out
