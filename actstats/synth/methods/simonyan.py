"""``--method simonyan``: ``-S_c(I) + lambda ||I||^2`` from the zero image (the baseline).

Simonyan, Vedaldi & Zisserman (2014). No statistics: the measured baseline the
priors are compared with (it reaches p=1 on the network it optimizes and fools
no judge).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from actstats.net.network import Network
from actstats.synth.jobs import Job, Synthesis, batch_rows
from actstats.synth.methods.base import RenderConfig, regularizers, render_jobs, target
from actstats.synth.methods.registry import register
from actstats.synth.render import Progress

__all__ = ["SimonyanConfig", "synthesize_simonyan"]


@dataclass(frozen=True)
class SimonyanConfig(RenderConfig):
    """The shared loop with Simonyan's L2 penalty."""

    l2_weight: float = 1e-2


@register("simonyan", SimonyanConfig)
def synthesize_simonyan(
    network: Network,
    jobs: Sequence[Job],
    *,
    config: SimonyanConfig,
    seed: int = 0,
    progress: Progress | None = None,
) -> Synthesis:
    """Every job's target minus the regularizers, one batch."""
    per_job = [-config.target_weight * target(j) + regularizers(config) for j in jobs]
    result = render_jobs(network, list(jobs), per_job, config, seed, progress)
    return Synthesis(result, batch_rows(jobs), result.tracked["target"])
