"""Run the actstats CLI and SIGKILL it at the N-th call of a chosen function.

Usage: ``python tests/_killer.py MODULE:ATTR N before|after -- actstats-args...``.
``MODULE:ATTR`` may name a class attribute (``zarr:Group.create_array``). The
process kills itself with SIGKILL -- no cleanup, no ``finally`` -- exactly as
the OOM killer or a power cut would, right before (or after) that call.
"""

from __future__ import annotations

import functools
import importlib
import os
import signal
import sys
import threading


def _arm(target: str, n: int, when: str) -> None:
    module_name, attr_path = target.split(":")
    owner = importlib.import_module(module_name)
    *parents, attr = attr_path.split(".")
    for part in parents:
        owner = getattr(owner, part)
    original = getattr(owner, attr)
    calls = 0
    guard = threading.Lock()

    @functools.wraps(original)
    def wrapper(*args, **kwargs):
        nonlocal calls
        with guard:  # dask threads call concurrently: each call knows its own number
            calls += 1
            mine = calls
        if mine == n and when == "before":
            os.kill(os.getpid(), signal.SIGKILL)
        result = original(*args, **kwargs)
        if mine == n and when == "after":
            os.kill(os.getpid(), signal.SIGKILL)
        return result

    setattr(owner, attr, wrapper)


if __name__ == "__main__":
    sep = sys.argv.index("--")
    target, n, when = sys.argv[1:sep]
    _arm(target, int(n), when)
    from actstats.cli import main

    sys.argv = ["actstats", *sys.argv[sep + 1 :]]
    main()
