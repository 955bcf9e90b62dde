"""What every synthesis method takes and returns: jobs, class statistics, a batch's result.

Several jobs (neuron + class statistics + count) run as one batch: each job's
objective applies to its own rows (:func:`~actstats.synth.objectives.by_rows`);
:func:`batch_rows` says which.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from actstats.net.network import ResolvedNeuron
from actstats.net.reduce import Reduction
from actstats.synth.render import RenderResult

__all__ = ["ClassStats", "Job", "Synthesis", "batch_rows", "unit_std"]


@dataclass(frozen=True)
class ClassStats:
    """One class's fitted statistics, as the methods read them.

    ``models[layer]`` is a layer model (``quadratic_factors()`` or ``components()``,
    ``unit_zscores``, ``quantiles_``); ``models.conditional(layer, given=...)`` gives
    the chain's conditionals; ``reductions[layer]`` is the stored reduction
    (``full``/``mean``/``grid:S``); ``layers`` run shallow to deep.
    """

    name: str
    models: Any
    reductions: Mapping[str, Reduction | str]
    layers: Sequence[str]


@dataclass(frozen=True)
class Job:
    """``n`` samples of ``neuron`` driven by the statistics of class ``stats``."""

    neuron: ResolvedNeuron
    stats: ClassStats | None
    n: int


@dataclass
class Synthesis:
    """A batch's images and histories; ``rows[i]`` is job i's slice of the batch.

    ``chains[i][layer]`` (ancestral, code-prior) holds the activations job i's images
    were inverted to, ``stages[i]`` its layers in inversion order (deepest first).
    """

    result: RenderResult
    rows: list[slice]
    target_history: np.ndarray
    chains: list[dict[str, np.ndarray]] = field(default_factory=list)
    stages: list[list[str]] = field(default_factory=list)


def batch_rows(jobs: Sequence[Job]) -> list[slice]:
    """Each job's rows of the batch, in job order."""
    ends = np.cumsum([job.n for job in jobs])
    return [slice(int(b - job.n), int(b)) for job, b in zip(jobs, ends, strict=True)]


def unit_std(model: Any) -> np.ndarray:
    """Per-unit standard deviation of a Gaussian or mixture layer model."""
    var = model.marginal_variances() if hasattr(model, "marginal_variances") else model.variances_
    return np.sqrt(np.maximum(np.asarray(var, dtype=np.float64), 1e-12))
