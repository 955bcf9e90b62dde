"""``actstats report RUN_DIR``: an HTML page of a run's samples, exemplars, metrics and plots."""

from __future__ import annotations

from pathlib import Path

import typer

from actstats.cli.app import app, console, handle_errors
from actstats.cli.checks import check_options
from actstats.pipeline.report import run_report

__all__ = ["report"]


@app.command()
@handle_errors
def report(
    run_dir: Path = typer.Argument(..., help="Folder with samples.json files below it."),
    output: Path | None = typer.Option(
        None, "-o", "--output", help="HTML file [default: RUN_DIR/report.html]."
    ),
    store: str | None = typer.Option(
        None,
        "--store",
        help="Activation store: each neuron's real exemplars [default: run.json's].",
    ),
    fitted: str | None = typer.Option(
        None, "--fitted", help="Fitted models: class outliers and the real-image NLL line."
    ),
    holdout: str | None = typer.Option(
        None, "--holdout", help="Store of held-out real images: the NLL plot's reference line."
    ),
    root: Path | None = typer.Option(
        None, "--root", help="Data root of the store's images [default: the recorded one]."
    ),
    n_real: int = typer.Option(8, "--n-real", help="Real images shown per neuron."),
) -> None:
    """Write one self-contained report.html (images inline, offline) with plots beside it."""
    check_options(n_real=n_real)
    path = run_report(
        run_dir, out=output, store=store, models=fitted, holdout=holdout, root=root, n_real=n_real
    )
    console.print(f"wrote {path}", markup=False)
