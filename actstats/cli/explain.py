"""``actstats saliency | localize | invert | dream IMAGE ...``: explain one image."""

from __future__ import annotations

from pathlib import Path

import typer

from actstats.cli.app import app, console, handle_errors
from actstats.cli.checks import check_options
from actstats.cli.options import FITTED, OLD_FITTED, OLD_MODEL, renamed
from actstats.pipeline.explain import run_dream, run_invert, run_localize, run_saliency
from actstats.synth.methods.dream import DreamConfig
from actstats.synth.methods.invert import InvertConfig

__all__ = ["dream_command", "invert_command", "localize_command", "saliency_command"]

_NETWORK = typer.Option(None, "--network", help="Network [default: the --fitted file's].")
_WEIGHTS = typer.Option(None, "--weights", help="imagenet | PATH | none.")
_DEVICE = typer.Option("auto", help="auto | cpu | cuda | cuda:N.")
_CLASS = typer.Option(
    None, "--class", help="Class whose statistics are the prior [default: the predicted one]."
)
_IMAGE = typer.Argument(..., help="Image file.")
_NEURON = typer.Option(..., "--neuron", help="LAYER:INDEX, LAYER:INDEX@Y,X or LAYER:CLASSNAME.")
_SMOOTHGRAD = typer.Option(0, "--smoothgrad", help="Average over N noisy copies (0: plain).")
_KIND_HELP = "Map: gradient (Simonyan's max_c |dS/dI|) or input-gradient (evidence for the unit)."


@app.command("saliency")
@handle_errors
def saliency_command(
    image: Path = _IMAGE,
    neuron: str = _NEURON,
    output: Path = typer.Option(
        ..., "-o", "--output", help="PNG of image | heat map (.png added); raw map beside as .npy."
    ),
    network: str | None = _NETWORK,
    old_model: str | None = OLD_MODEL,
    weights: str | None = _WEIGHTS,
    fitted: Path | None = FITTED,
    old_fitted: Path | None = OLD_FITTED,
    smoothgrad: int = _SMOOTHGRAD,
    percentile: float = typer.Option(
        99.0, "--percentile", help="Clip the heat map at this percentile of the map."
    ),
    overlay: bool = typer.Option(False, "--overlay", help="Add the map over the image."),
    kind: str = typer.Option("gradient", "--kind", help=_KIND_HELP),
    device: str = _DEVICE,
) -> None:
    """Image-specific saliency max_c |dS/dI| of a neuron (Simonyan et al. 2014, Fig. 2)."""
    check_options(smoothgrad=smoothgrad)
    png, npy = run_saliency(
        image,
        neuron,
        output,
        network=renamed(network, old_model, "--network", "--model"),
        weights=weights,
        fitted=renamed(fitted, old_fitted, "--fitted", "--models"),
        smoothgrad=smoothgrad,
        percentile=percentile,
        overlay=overlay,
        kind=kind,
        device=device,
    )
    console.print(f"wrote {png} (image | heat map) and {npy} (raw map)", markup=False)


@app.command("localize")
@handle_errors
def localize_command(
    image: Path = _IMAGE,
    neuron: str = _NEURON,
    output: Path = typer.Option(..., "-o", "--output", help="Folder for mask, box and overlay."),
    network: str | None = _NETWORK,
    old_model: str | None = OLD_MODEL,
    weights: str | None = _WEIGHTS,
    fitted: Path | None = FITTED,
    old_fitted: Path | None = OLD_FITTED,
    smoothgrad: int = _SMOOTHGRAD,
    windows: int = typer.Option(
        0,
        "--windows",
        help="Seed from the saliency of the N crops the network classifies best (0: the "
        "whole frame). Try 20 for a small object in a cluttered frame.",
    ),
    kind: str | None = typer.Option(
        None, "--kind", help=_KIND_HELP + " Default: gradient, input-gradient with --windows."
    ),
    device: str = _DEVICE,
) -> None:
    """Box the object a neuron responds to: saliency seeds + GraphCut colour segmentation."""
    check_options(smoothgrad=smoothgrad, windows=windows)
    out = run_localize(
        image,
        neuron,
        output,
        network=renamed(network, old_model, "--network", "--model"),
        weights=weights,
        fitted=renamed(fitted, old_fitted, "--fitted", "--models"),
        smoothgrad=smoothgrad,
        windows=windows,
        kind=kind,
        device=device,
    )
    files = ", ".join(str(out / f) for f in ("overlay.png", "mask.png", "box.json", "saliency.npy"))
    console.print(f"wrote {files}", markup=False)


@app.command("invert")
@handle_errors
def invert_command(
    image: Path = _IMAGE,
    layer: str = typer.Option(..., "--layer", help="Layer whose activations are inverted."),
    output: Path = typer.Option(..., "-o", "--output", help="Folder for the images and JSON."),
    network: str | None = _NETWORK,
    old_model: str | None = OLD_MODEL,
    weights: str | None = _WEIGHTS,
    fitted: Path | None = FITTED,
    old_fitted: Path | None = OLD_FITTED,
    class_name: str | None = _CLASS,
    steps: int = typer.Option(200, help="Optimization steps."),
    prior_weight: float = typer.Option(0.05, help="Weight of the class-model NLL."),
    seed: int = typer.Option(0, help="Seed of the jitter."),
    device: str = _DEVICE,
) -> None:
    """Reconstruct the image from one layer's activations; with --fitted also under the prior."""
    check_options(steps=steps, prior_weight=prior_weight, seed=seed)
    config = InvertConfig(steps=steps, prior_weight=prior_weight, seed=seed)
    out = run_invert(
        image,
        layer,
        output,
        network=renamed(network, old_model, "--network", "--model"),
        weights=weights,
        fitted=renamed(fitted, old_fitted, "--fitted", "--models"),
        class_name=class_name,
        config=config,
        device=device,
    )
    console.print(f"wrote {out}", markup=False)


@app.command("dream")
@handle_errors
def dream_command(
    image: Path = _IMAGE,
    layer: str = typer.Option(..., "--layer", help="Layer whose response is amplified."),
    output: Path = typer.Option(..., "-o", "--output", help="Folder for the images and JSON."),
    octaves: int = typer.Option(3, help="Scales, coarse to fine."),
    steps: int = typer.Option(30, help="Optimization steps per octave."),
    network: str | None = _NETWORK,
    old_model: str | None = OLD_MODEL,
    weights: str | None = _WEIGHTS,
    fitted: Path | None = FITTED,
    old_fitted: Path | None = OLD_FITTED,
    class_name: str | None = _CLASS,
    prior_weight: float = typer.Option(0.05, help="Weight of the class-model NLL."),
    seed: int = typer.Option(0, help="Seed of the jitter."),
    device: str = _DEVICE,
) -> None:
    """Deep dream: amplify what a layer already sees in the image; with --fitted also a prior."""
    check_options(octaves=octaves, steps=steps, prior_weight=prior_weight, seed=seed)
    config = DreamConfig(octaves=octaves, steps=steps, prior_weight=prior_weight, seed=seed)
    out = run_dream(
        image,
        layer,
        output,
        network=renamed(network, old_model, "--network", "--model"),
        weights=weights,
        fitted=renamed(fitted, old_fitted, "--fitted", "--models"),
        class_name=class_name,
        config=config,
        device=device,
    )
    console.print(f"wrote {out}", markup=False)
