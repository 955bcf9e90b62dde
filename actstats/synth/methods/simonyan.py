"""``--method simonyan``: ``-S_c(I) + lambda ||I||^2`` from the zero image (the baseline).

Simonyan, Vedaldi & Zisserman (2014). No statistics: the measured baseline the
priors are compared with (it reaches p=1 on the network it optimizes and fools
no judge).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from actstats.net.network import Network
from actstats.synth import objectives as obj
from actstats.synth.jobs import Job, Synthesis, batch_rows
from actstats.synth.methods.base import RenderConfig, image_param, regularizers, target, transforms
from actstats.synth.methods.registry import register
from actstats.synth.render import Progress, render

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
    counts = [job.n for job in jobs]
    generator = torch.Generator().manual_seed(seed)
    param, hooks = image_param(network, sum(counts), config, generator)
    per_job = [-config.target_weight * target(j) + regularizers(config) for j in jobs]
    result = render(
        network,
        obj.by_rows(per_job, counts),
        param,
        steps=config.steps,
        lr=config.lr,
        transforms=transforms(config),
        generator=generator,
        step_hooks=hooks,
        track={"target": obj.by_rows([target(j) for j in jobs], counts)},
        progress=progress,
    )
    return Synthesis(result, batch_rows(jobs), result.tracked["target"])
