"""Progress bars: the library reports through callbacks, the CLI draws them here."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from actstats.cli.app import err_console

__all__ = ["counting_bar", "loss_bar"]


@contextlib.contextmanager
def counting_bar(
    label: str, unit: str, *, enabled: bool = True, transient: bool = False
) -> Iterator[Callable[[int, int], None]]:
    """A bar with a rate in ``unit``/s; yields ``progress(completed, total)``.

    The rate counts only what this run did (a resumed run starts from its first report).
    """
    if not enabled:
        yield lambda completed, total: None
        return
    columns = (
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[rate]} " + unit + "/s"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err_console, transient=transient) as bar:
        task = bar.add_task(label, total=None, rate="-")
        start: list[float | int] = []

        def progress(completed: int, total: int) -> None:
            if not start:
                start.extend((time.perf_counter(), completed))
            rate = (completed - start[1]) / max(1e-9, time.perf_counter() - start[0])
            bar.update(task, completed=completed, total=total, rate=f"{rate:,.1f}")

        yield progress


@contextlib.contextmanager
def loss_bar(label: str, *, enabled: bool = True) -> Iterator[Callable[[int, int, float], None]]:
    """A transient bar of optimization steps; yields ``progress(step, total, loss)``."""
    if not enabled:
        yield lambda step, total, loss: None
        return
    columns = (
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.3g}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err_console, transient=True) as bar:
        task = bar.add_task(label, total=None, loss=float("nan"))

        def progress(step: int, total: int, loss: float) -> None:
            bar.update(task, completed=step, total=total, loss=loss)

        yield progress
