"""Which dask scheduler runs a pipeline: the one table that collect and fit share.

``--scheduler NAME`` picks one of dask's in-process schedulers from
:data:`LOCAL_SCHEDULERS`; any other value is the address of a dask.distributed
cluster to join, and ``--workers N`` starts one (both in
:mod:`actstats.pipeline.cluster`, imported only then). Progress is reported through
a :data:`Progress` callback; only the CLI draws bars.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from dask.callbacks import Callback

from actstats.errors import ActstatsError
from actstats.io.store import is_process_local

__all__ = [
    "LOCAL_SCHEDULERS",
    "Progress",
    "check_reachable",
    "compute_options",
    "is_local",
    "task_progress",
]

#: dask's in-process schedulers by every name ``--scheduler`` accepts; anything else
#: is a dask.distributed address.
LOCAL_SCHEDULERS = {
    "threads": "threads",
    "sync": "sync",
    "synchronous": "sync",
    "processes": "processes",
}

#: ``progress(completed, total)``, called as work finishes (images for collect, tasks
#: for fit); the CLI draws it as a bar, the library never prints.
Progress = Callable[[int, int], None]


def is_local(scheduler: str | None, workers: int | None) -> bool:
    """Whether one of dask's own schedulers runs the work (no cluster to join or start)."""
    return workers is None and (scheduler is None or scheduler in LOCAL_SCHEDULERS)


def check_reachable(store: str, scheduler: str | None, workers: int | None) -> None:
    """Refuse a ``memory://`` store when the work runs in other processes."""
    in_process = is_local(scheduler, workers) and scheduler != "processes"
    if is_process_local(store) and not in_process:
        raise ActstatsError(
            f"store {store}: memory:// lives in this process only; dask workers need a "
            "shared path or object store URL"
        )


@contextlib.contextmanager
def compute_options(scheduler: str | None, workers: int | None) -> Iterator[dict[str, Any]]:
    """``dask.compute`` keywords: a local scheduler by name, or a distributed client's."""
    if is_local(scheduler, workers):
        yield {"scheduler": LOCAL_SCHEDULERS[scheduler or "threads"]}
        return
    from actstats.pipeline.cluster import connect

    with connect(scheduler, workers) as client:
        yield {"scheduler": client.get}


class _TaskProgress(Callback):
    """Reports finished dask tasks as ``progress(done, total)`` (local schedulers)."""

    def __init__(self, progress: Progress) -> None:
        super().__init__()
        self._progress = progress
        self._done = self._total = 0

    def _start_state(self, dsk: Any, state: Any) -> None:
        self._total = sum(len(state[k]) for k in ("ready", "waiting", "running"))
        self._progress(0, self._total)

    def _posttask(self, *args: Any) -> None:
        self._done += 1
        self._progress(self._done, self._total)


def task_progress(progress: Progress | None) -> contextlib.AbstractContextManager[Any]:
    """Call ``progress(done, total)`` as the tasks of local dask computations inside finish."""
    return _TaskProgress(progress) if progress else contextlib.nullcontext()
