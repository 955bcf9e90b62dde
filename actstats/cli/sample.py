"""``actstats sample MODELS --neuron fc8:207 --method suppress -o OUT``."""

from __future__ import annotations

from pathlib import Path

import typer

from actstats.cli.app import app, console, handle_errors
from actstats.cli.checks import check_options
from actstats.cli.options import OLD_MODEL, renamed, split_list
from actstats.cli.progress import loss_bar
from actstats.pipeline.sample import run_sample
from actstats.synth.methods import METHODS

__all__ = ["sample"]


@app.command()
@handle_errors
def sample(
    fitted: Path = typer.Argument(
        ..., metavar="MODELS", help="Fitted-models directory written by `actstats fit`."
    ),
    neuron: list[str] = typer.Option(
        ..., "--neuron", help="LAYER:INDEX, LAYER:INDEX@Y,X or LAYER:CLASSNAME (repeatable)."
    ),
    method: str = typer.Option("suppress", help=" | ".join(METHODS) + "."),
    n: int = typer.Option(8, "-n", help="Samples per neuron."),
    seed: int = typer.Option(0, help="Seed; the same seed gives identical images on the CPU."),
    output: Path = typer.Option(..., "-o", "--output", help="Folder for PNGs and samples.json."),
    class_name: str | None = typer.Option(
        None, "--class", help="Class folder whose statistics drive the samples."
    ),
    steps: int | None = typer.Option(None, help="Optimization steps (method default: 200)."),
    lr: float | None = typer.Option(None, help="Adam learning rate."),
    prior_weight: float | None = typer.Option(None, help="Weight of the class-model NLL."),
    layers: list[str] | None = typer.Option(
        None,
        "--layers",
        help="Stored layers for the priors / chain, comma-separated or repeated.",
    ),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N."),
    network: str | None = typer.Option(
        None, "--network", help="Network [default: the one the model file records]."
    ),
    old_model: str | None = OLD_MODEL,
    weights: str | None = typer.Option(None, help="Weights [default: the model file's]."),
    generator: Path | None = typer.Option(
        None, help="Generator folder from `actstats train-generator` (--method generator)."
    ),
    logits: str | None = typer.Option(
        None,
        "--logits",
        help="Layer holding the class scores, for p(target) (e.g. net._fc) "
        "[default: the layer whose output the network returns].",
    ),
) -> None:
    """Synthesize images for neurons using the fitted statistics of real activations."""
    check_options(n=n, seed=seed, steps=steps, lr=lr, prior_weight=prior_weight)
    with loss_bar(method) as progress:
        folders = run_sample(
            fitted,
            neuron,
            method,
            n,
            seed,
            output,
            class_name=class_name,
            network=renamed(network, old_model, "--network", "--model"),
            weights=weights,
            device=device,
            steps=steps,
            lr=lr,
            prior_weight=prior_weight,
            layers=split_list(layers),
            progress=progress,
            generator=generator,
            logits=logits,
        )
    for folder in folders:
        console.print(f"wrote {folder}", markup=False)
