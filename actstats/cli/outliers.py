"""``actstats outliers STORE MODELS``: the real images least likely under their own class."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from actstats.cli.app import app, console, handle_errors
from actstats.cli.options import CLASSES, split_list
from actstats.pipeline.outliers import run_outliers

__all__ = ["outliers"]


@app.command()
@handle_errors
def outliers(
    store: str = typer.Argument(..., help="Activation store the models were fitted on."),
    models: str = typer.Argument(..., help="Model directory written by `actstats fit`."),
    classes: list[str] | None = CLASSES,
    k: int = typer.Option(10, "-k", help="Images listed per class (and per layer in the JSON)."),
    output: Path | None = typer.Option(
        None, "-o", "--output", help="Folder for outliers.png/.json [default: beside the store]."
    ),
    root: Path | None = typer.Option(
        None, "--root", help="Data root of the images [default: the one the store recorded]."
    ),
) -> None:
    """Mislabelled, corrupt or off-distribution images: least likely under their class model."""
    results, png, record = run_outliers(
        store, models, output, classes=split_list(classes), k=k, root=root
    )
    for res in results:
        table = Table(title=f"{res.class_name}: {res.n_images} images", title_justify="left")
        for col in (
            "#",
            "image",
            "z (most atypical layer)",
            "most atypical layer",
            "units (share of d²)",
        ):
            table.add_column(col, overflow="fold", no_wrap=col == "image")
        for o in res.overall:
            worst = max(res.layers, key=lambda ly: o.layer_z[ly])
            units = ", ".join(f"{u.unit} ({u.contribution:.3g})" for u in o.units[worst])
            table.add_row(
                str(o.rank), o.path, f"{o.score:.2f}", f"{worst} z {o.layer_z[worst]:.1f}", units
            )
        console.print(table)
    console.print(f"wrote {png} and {record}")
