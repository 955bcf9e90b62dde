"""``actstats demo``: collect, fit, sample and report on scikit-learn's digits (CPU, minutes)."""

from __future__ import annotations

from pathlib import Path

import typer

from actstats.cli.app import app, console, handle_errors
from actstats.demo import run_demo

__all__ = ["demo"]


@app.command()
@handle_errors
def demo(
    out: Path = typer.Option(Path("demo-run"), "--out", "-o", help="Run folder to write."),
    cache: Path | None = typer.Option(
        None,
        help="Cache for the digits and trained networks "
        "[default: $ACTSTATS_CACHE or ~/.cache/actstats].",
    ),
    quick: bool = typer.Option(False, "--quick", help="Three classes, few steps (a smoke test)."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Run the whole pipeline on digits: no download, no GPU; ends with the report's path."""
    run_demo(out, cache=cache, quick=quick, console=console, progress=progress)
