"""``actstats top STORE --neuron LAYER:IDX``: the real images that drive a unit."""

from __future__ import annotations

from pathlib import Path

import typer

from actstats.cli.app import app, console, handle_errors
from actstats.cli.progress import counting_bar
from actstats.pipeline.top import run_top

__all__ = ["top"]


@app.command()
@handle_errors
def top(
    store: str = typer.Argument(..., help="Activation store written by `actstats collect`."),
    neuron: str = typer.Option(
        ..., "--neuron", help="LAYER:INDEX (fc unit, or a conv channel's mean) or LAYER:INDEX@Y,X."
    ),
    k: int = typer.Option(16, "-k", help="Images at each end of the ranking."),
    class_name: str | None = typer.Option(
        None, "--class", help="Rank only this class folder's images."
    ),
    output: Path | None = typer.Option(
        None, "-o", "--output", help="Folder for top.png and top.json [default: top/NEURON]."
    ),
    root: Path | None = typer.Option(
        None, "--root", help="Data root of the images [default: the one the store recorded]."
    ),
) -> None:
    """Top-k and bottom-k real images of a unit, read from the store (no forward pass)."""
    with counting_bar("reading store", "tasks", transient=True) as progress:
        result, png, record = run_top(
            store, neuron, k, output, class_name=class_name, root=root, progress=progress
        )
    best = result.top[0]
    console.print(
        f"{result.neuron} ({result.unit}): largest {best.value:.4g} in {best.path}; "
        f"ranked {result.n_images} images"
    )
    console.print(f"wrote {png} and {record}")
