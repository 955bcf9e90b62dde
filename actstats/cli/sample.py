"""``actstats sample MODELS --neuron fc8:207 --method suppress -o OUT``."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from actstats.cli.app import app, console, err_console, handle_errors
from actstats.sample import run_sample
from actstats.synth.recipes import METHODS

__all__ = ["sample"]


@app.command()
@handle_errors
def sample(
    models: Path = typer.Argument(..., help="Model directory written by `actstats fit`."),
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
        None, "--layers", help="Stored layers for the priors / chain (repeatable)."
    ),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N."),
    model: str | None = typer.Option(None, help="Network (default: the model file's)."),
    weights: str | None = typer.Option(None, help="Weights (default: the model file's)."),
) -> None:
    """Synthesize images for neurons using the fitted statistics of real activations."""
    columns = (
        TextColumn(f"{method}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.3g}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err_console, transient=True) as bar:
        task = bar.add_task("steps", total=None, loss=float("nan"))

        def progress(step: int, total: int, loss: float) -> None:
            bar.update(task, completed=step, total=total, loss=loss)

        folders = run_sample(
            models,
            neuron,
            method,
            n,
            seed,
            output,
            class_name=class_name,
            model=model,
            weights=weights,
            device=device,
            steps=steps,
            lr=lr,
            prior_weight=prior_weight,
            layers=[p for item in layers or [] for p in item.split(",") if p] or None,
            progress=progress,
        )
    for folder in folders:
        console.print(f"wrote {folder}")
