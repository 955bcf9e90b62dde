"""``actstats fit STORE -o MODELS``: per-class statistics of stored activations."""

from __future__ import annotations

import math

import typer
from rich.markup import escape
from rich.table import Table

from actstats.cli.app import app, console, handle_errors
from actstats.cli.checks import check_options, check_scheduler
from actstats.cli.options import renamed, split_list
from actstats.cli.progress import counting_bar
from actstats.pipeline.fit import fit_store

__all__ = ["fit"]


@app.command()
@handle_errors
def fit(
    store: str = typer.Argument(
        ..., help="Activation store written by `actstats collect` (path or fsspec URL)."
    ),
    output: str = typer.Option(
        ..., "-o", "--output", help="Model directory to write (path or fsspec URL)."
    ),
    cov: str = typer.Option(
        "auto", help="full | full:oas | full:empirical | diag | lowrank:K | auto."
    ),
    mixture: str = typer.Option("0", help="Mixture components: 0 (none), K, or auto (BIC)."),
    classes: list[str] | None = typer.Option(
        None, "--classes", help="Class folders to fit, comma-separated or repeated [default: all]."
    ),
    layers: list[str] | None = typer.Option(
        None, "--layers", help="Stored layers to fit, comma-separated or repeated [default: all]."
    ),
    old_class: list[str] | None = typer.Option(
        None, "--class", hidden=True, help="Old name of --classes."
    ),
    old_layer: list[str] | None = typer.Option(
        None, "--layer", hidden=True, help="Old name of --layers."
    ),
    scheduler: str | None = typer.Option(
        None, help="threads (default), sync, processes, or a dask.distributed address."
    ),
    workers: int | None = typer.Option(None, help="Start N local dask worker processes."),
    seed: int = typer.Option(0, help="Seed of the held-out split and mixture fits."),
    overwrite: bool = typer.Option(False, help="Replace an existing model directory."),
    allow_incomplete: bool = typer.Option(
        False, "--allow-incomplete", help="Fit a store an interrupted collect left unfinished."
    ),
    memory: str | None = typer.Option(
        None,
        help="Memory budget for the moments, e.g. 4GB [default: half the machine's memory]. "
        "--cov auto keeps within it (low-rank + diagonal or diagonal for wide layers); "
        "a --cov that cannot fit is refused.",
    ),
) -> None:
    """Fit Gaussian / mixture models per class and layer, and joint models of adjacent layers."""
    check_options(workers=workers, seed=seed)
    check_scheduler(scheduler, ("threads", "sync", "synchronous", "processes"))
    with counting_bar("fit", "tasks", transient=True) as progress:
        result = fit_store(
            store,
            output,
            cov=cov,
            mixture=mixture,
            classes=split_list(renamed(classes, old_class, "--classes", "--class")),
            layers=split_list(renamed(layers, old_layer, "--layers", "--layer")),
            scheduler=scheduler,
            workers=workers,
            seed=seed,
            overwrite=overwrite,
            progress=progress,
            allow_incomplete=allow_incomplete,
            memory=memory,
        )
    for note in result.notes:
        console.print(f"[bold]memory:[/] {escape(note)}", highlight=False, soft_wrap=True)
    table = Table(title=f"fitted models -> {escape(str(result.path))}")
    for col in ("class", "layer", "N", "D", "cov", "rank", "mixture", "held-out LL/dim", "time"):
        table.add_column(col, justify="left" if col in ("class", "layer", "cov") else "right")
    for r in result.rows:
        ll = r["holdout_ll_per_dim"]
        table.add_row(
            r["class"],
            r["layer"],
            str(r["N"]),
            str(r["D"]),
            r["cov"],
            str(r["rank"]),
            "-" if r["mixture"] is None else str(r["mixture"]),
            "-" if math.isnan(ll) else f"{ll:.3f}",
            f"{r['seconds']:.2f}s",
        )
    console.print(table)
