"""One writer at a time per store and per model directory.

A writer holds an advisory ``fcntl.flock`` on ``.<name>.lock`` beside its
target (in the parent folder, so ``--overwrite`` cannot remove a lock that is
held). The kernel drops the lock when the process ends, however it ends
(SIGKILL included), so a killed run never leaves a stale lock; the file stays
and names the last holder. A second writer is refused at once with one line
that names the holder (pid, host, command, start time), instead of both
writing into the same chunks.

The lock is re-entrant within one thread (``fit`` holds its output's lock
for the whole fit, and the model writer takes it again to write), and
exclusive between threads and processes.

Object-store URLs (``s3://``, ``gs://`` ...) have no advisory locks, and a
``memory://`` store lives in one process: both are left unlocked.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from actstats.errors import ActstatsError, os_error

__all__ = ["lock_path", "writer_lock"]

#: Lock files this process holds -> the thread holding each.
_HELD: dict[Path, int] = {}
_HELD_GUARD = threading.Lock()


def lock_path(target: str | os.PathLike) -> Path | None:
    """The lock file of ``target``, or None where locks do not apply (URLs)."""
    text = os.fspath(target)
    if text.startswith("file://"):
        text = text.removeprefix("file://")
    elif "://" in text:
        return None
    path = Path(text).absolute()
    return path.parent / f".{path.name}.lock"


@contextlib.contextmanager
def writer_lock(target: str | os.PathLike, what: str, *, wait: bool = False) -> Iterator[None]:
    """Hold the writer lock of ``target`` (``what`` names it in messages: "store").

    Creates the parent folder if needed. Raises :class:`ActstatsError` when
    another process holds the lock (with ``wait``, blocks until it is released
    instead: for caches that every run fills the same way), and on any OS error.
    """
    lock = lock_path(target)
    if lock is None or _HELD.get(lock) == threading.get_ident():
        yield
        return
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise os_error(exc, lock.parent) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ActstatsError(
                f"{what} {os.fspath(target)}: another writer holds it ({_holder(fd)}); "
                "wait for it to finish or stop it, then rerun"
            ) from None
        _record_holder(fd)
        with _HELD_GUARD:
            _HELD[lock] = threading.get_ident()
        try:
            yield
        finally:
            with _HELD_GUARD:
                _HELD.pop(lock, None)
    finally:
        os.close(fd)


def _record_holder(fd: int) -> None:
    info = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv)),
        "since": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    with contextlib.suppress(OSError):  # the record is informative; the lock is what counts
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)


def _holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return (
            f"pid {info['pid']} on {info['host']}, `{info['command'][:80]}`, since {info['since']}"
        )
    except (OSError, ValueError, KeyError, TypeError):
        return "a process that has not recorded itself yet"
