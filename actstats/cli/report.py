"""``actstats report RUN_DIR``: an HTML page of a run's samples, metrics and plots."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from actstats.cli.app import app, console, handle_errors
from actstats.cli.checks import check_options
from actstats.io.report import write_report

__all__ = ["report"]


@app.command()
@handle_errors
def report(
    run_dir: Path = typer.Argument(..., help="Folder with samples.json files below it."),
    output: Path | None = typer.Option(
        None, "-o", "--output", help="HTML file [default: RUN_DIR/report.html]."
    ),
    n_real: int = typer.Option(8, "--n-real", help="Real images shown per class."),
) -> None:
    """Write a self-contained report.html (images inline) with plots beside it."""
    check_options(n_real=n_real)
    path = write_report(run_dir, out=output, n_real=n_real)
    console.print(f"report: [bold]{escape(str(path))}[/]")
