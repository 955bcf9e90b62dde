"""How ``fit`` keeps every layer's moments within a memory budget (``--memory 4GB``).

A dense covariance costs 8 D^2 bytes per class: 134 MB for VGG's fc6 (D = 4096)
but 183 GB for a ViT block stored whole (D = 151,296). Before any data is read,
:func:`plan_moments` estimates the peak memory of each layer's moments in the fit
graph and picks per layer:

``dense``
    full moments (D x D): any ``--cov``.
``sketch``
    diagonal + a Frequent Directions sketch of ``rows`` rows
    (:mod:`actstats.stats.sketch`), O(rows * D): low-rank + diagonal models.
``diag``
    the diagonal only, O(D): diagonal models.

``--cov auto`` takes dense where the budget allows; else, widest layer first, it
moves a layer to a sketch, then to the diagonal, until the estimate fits, and says
so; an explicit ``--cov full`` that cannot fit is refused with the size it needs.
Joint models of adjacent layers live in the layers' PCA bases (2 x ``basis_dim``
coordinates), so they never need a D x D matrix.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from actstats.errors import ActstatsError

__all__ = [
    "AUTO_RANK",
    "MomentPlan",
    "default_memory",
    "format_bytes",
    "parse_memory",
    "plan_moments",
]

_UNITS = {"": 1, "b": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}
_MEMORY_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*$", re.IGNORECASE)
#: Rank of the low-rank models ``cov="auto"`` fits to wide layers (as ``fit_gaussian``).
AUTO_RANK = 64
#: Histogram bins per unit kept by the quantile pass (int64 counts).
HIST_BINS = 256


def parse_memory(text: str) -> int:
    """``"4GB"``, ``"512MiB"``, ``"1.5g"`` or a number of bytes -> bytes (powers of 1024)."""
    match = _MEMORY_RE.match(str(text))
    if not match or float(match[1]) <= 0:
        raise ActstatsError(f"--memory {text!r}: use a size such as 4GB, 512MB or 1.5GiB")
    return int(float(match[1]) * _UNITS[match[2].lower()])


def default_memory() -> int:
    """Half of the machine's physical memory (the rest for the store reads, Python, BLAS)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2)
    except (ValueError, OSError, AttributeError):
        return 4 * 2**30


def format_bytes(n: float) -> str:
    """1536 -> ``"1.5 KiB"``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


@dataclass(frozen=True)
class MomentPlan:
    """Per layer the moment form (``dense``, ``sketch`` or ``diag``), and why."""

    forms: dict[str, str]
    rows: int
    rank: int
    bytes_needed: int
    notes: list[str]


def _layer_bytes(form: str, d: int, copies: int, rows: int, rank: int) -> int:
    """Peak bytes of one layer: its moments in ``copies`` places plus its quantile histograms."""
    per_copy = {"dense": d * d + 3 * d, "sketch": (rows + rank + 6) * d, "diag": 6 * d}[form]
    return 8 * (per_copy + HIST_BINS * d) * copies


def plan_moments(
    dims: dict[str, int],
    *,
    cov: str,
    n_groups: int,
    memory: int,
    threads: int | None = None,
    rank: int = AUTO_RANK,
) -> MomentPlan:
    """Choose each layer's moment form so the fit's estimated peak stays within ``memory``.

    Parameters
    ----------
    dims : dict of layer -> D
    cov : str
        The ``--cov`` form: ``auto``, ``full``, ``lowrank``, ``diag`` (from ``parse_cov_spec``).
    n_groups : int
        Classes plus the all-classes group: each keeps its layer models until the end.
    memory : int
        Budget in bytes.
    threads : int, optional
        Chunk tasks in flight (default: CPU count); each holds a partial result per group.
    rank : int
        Rank of the low-rank models (the sketch keeps ``2 * rank`` rows).
    """
    threads = threads or os.cpu_count() or 1
    copies = n_groups + 2 * threads
    rows = 2 * rank
    wanted = {"auto": "dense", "full": "dense", "lowrank": "dense", "diag": "diag"}[cov]
    forms = dict.fromkeys(dims, wanted)

    def total() -> int:
        return sum(_layer_bytes(forms[k], d, copies, rows, rank) for k, d in dims.items())

    notes: list[str] = []
    fallbacks = {"auto": ("sketch", "diag"), "lowrank": ("sketch",), "full": (), "diag": ()}[cov]
    for layer in sorted(dims, key=dims.get, reverse=True):  # widest first, as far as needed
        for fallback in fallbacks:
            if total() <= memory:
                break
            forms[layer] = fallback
    need = total()
    if need > memory:
        widest = max(dims, key=dims.get)
        d = dims[widest]
        raise ActstatsError(
            f"--cov {cov}: the fit needs about {format_bytes(need)} ({widest}, D={d:,}: "
            f"{format_bytes(8 * d * d)} per dense covariance) but --memory is "
            f"{format_bytes(memory)}; "
            + (
                "use --cov auto (low-rank + diagonal or diagonal), fewer classes, or more --memory"
                if cov != "auto"
                else "store fewer values (--reduce), fit fewer layers or classes, or raise --memory"
            )
        )
    for layer, form in forms.items():
        if form != wanted:
            d = dims[layer]
            what = (
                f"low-rank({rank}) + diagonal from a {rows}-row sketch"
                if form == "sketch"
                else "diagonal"
            )
            notes.append(
                f"{layer} (D={d:,}): a dense covariance needs {format_bytes(8 * d * d)} per class "
                f"and the fit would exceed --memory {format_bytes(memory)}; fitting {what}"
            )
    return MomentPlan(forms, rows, rank, need, notes)
