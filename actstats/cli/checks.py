"""Numeric command-line options checked at the edge: finite and in range, one line if not.

typer/click parse ``nan``, ``inf`` and 40-digit integers without a word; the
library would then write black images, NaN metrics or overflow deep inside a
run. Every command passes its numeric options through :func:`check_options`
before calling the library, so a bad value costs one line and no work.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from actstats.errors import ActstatsError

__all__ = ["RANGES", "Range", "check_options", "check_scheduler", "flag_name"]


@dataclass(frozen=True)
class Range:
    """Allowed values: ``lo <= v <= hi`` (``lo < v`` when ``lo_open``), integral if ``integer``."""

    lo: float
    hi: float
    integer: bool = True
    lo_open: bool = False

    def describe(self) -> str:
        kind = "an integer" if self.integer else "a finite number"
        left = "(" if self.lo_open else "["
        return f"{kind} in {left}{self.lo:g}, {self.hi:g}]"

    def holds(self, value: float) -> bool:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if self.integer and not isinstance(value, int):
            return False
        if not math.isfinite(value):
            return False
        above = value > self.lo if self.lo_open else value >= self.lo
        return above and value <= self.hi


#: Every numeric option of every command, by Python parameter name.
RANGES: dict[str, Range] = {
    "seed": Range(0, 2**32 - 1),  # numpy's legacy seeding and sklearn accept [0, 2**32)
    "per_class": Range(1, 10**9),
    "batch_size": Range(1, 2**16),
    "chunk_size": Range(1, 10**7),
    "workers": Range(1, 1024),
    "n": Range(1, 10_000),
    "steps": Range(1, 10**6),
    "lr": Range(0.0, 1e3, integer=False, lo_open=True),
    "prior_weight": Range(0.0, 1e6, integer=False),
    "smoothgrad": Range(0, 10_000),
    "windows": Range(0, 10_000),
    "octaves": Range(1, 16),
    "n_real": Range(0, 10_000),
    "input_size": Range(8, 8192),
}


def flag_name(name: str) -> str:
    """The flag a user typed for parameter ``name``: ``n`` -> ``-n``, ``prior_weight`` ->
    ``--prior-weight``."""
    return f"-{name}" if len(name) == 1 else "--" + name.replace("_", "-")


def check_options(**values: float | None) -> None:
    """Raise :class:`ActstatsError` for the first value outside its :data:`RANGES` entry.

    ``None`` (not given) passes; names missing from :data:`RANGES` are a bug.
    """
    for name, value in values.items():
        if value is None:
            continue
        allowed = RANGES[name]
        if not allowed.holds(value):
            shown = str(value) if len(str(value)) <= 24 else str(value)[:20] + "..."
            raise ActstatsError(f"{flag_name(name)} {shown}: must be {allowed.describe()}")


#: ``--scheduler``: an in-process scheduler name or a dask.distributed address.
_ADDRESS = re.compile(r"^([a-z][a-z0-9+.-]*://[^\s/]+|[A-Za-z0-9_.-]+:\d{1,5})/?$")


def check_scheduler(value: str | None, local: tuple[str, ...]) -> None:
    """Raise unless ``value`` is one of ``local`` or looks like ``tcp://host:port``."""
    if value is None or value in local or _ADDRESS.match(value):
        return
    raise ActstatsError(
        f"--scheduler {value[:40]}: use {', '.join(local)}, or a dask.distributed address "
        "such as tcp://host:8786"
    )
