"""``actstats demo``: collect, fit, sample and report on scikit-learn's digits (CPU, minutes)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import typer

from actstats.cli.app import app, console, handle_errors
from actstats.cli.options import renamed
from actstats.cli.progress import loss_bar
from actstats.demo.run import run_demo
from actstats.synth.render import Progress

__all__ = ["RichReporter", "demo"]


class RichReporter:
    """Draws the demo's stages as rules with their seconds, and a bar per sampling run."""

    def __init__(self, *, progress: bool = True) -> None:
        self.progress = progress

    @contextlib.contextmanager
    def stage(self, number: int, total: int, text: str) -> Iterator[None]:
        """A rule with the stage's title, then its seconds."""
        console.rule(f"[bold]{number}/{total}[/] {text}", align="left")
        start = time.perf_counter()
        yield
        console.print(f"[dim]{text}: {time.perf_counter() - start:.1f} s[/]")

    def say(self, text: str) -> None:
        """One line."""
        console.print(text, highlight=False)

    @contextlib.contextmanager
    def steps(self, label: str) -> Iterator[Progress]:
        """A transient bar of one sampling run's steps."""
        with loss_bar(f"{label:<10}", enabled=self.progress) as progress:
            yield progress


@app.command()
@handle_errors
def demo(
    output: Path | None = typer.Option(
        None, "-o", "--output", help="Run folder to write [default: demo-run]."
    ),
    old_out: Path | None = typer.Option(None, "--out", hidden=True, help="Old name of --output."),
    cache: Path | None = typer.Option(
        None,
        help="Cache for the digits and trained networks "
        "[default: $ACTSTATS_CACHE or ~/.cache/actstats].",
    ),
    quick: bool = typer.Option(False, "--quick", help="Three classes, few steps (a smoke test)."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Run the whole pipeline on digits: no download, no GPU; ends with the report's path."""
    out = renamed(output, old_out, "-o/--output", "--out") or Path("demo-run")
    run_demo(out, cache=cache, quick=quick, reporter=RichReporter(progress=progress))
