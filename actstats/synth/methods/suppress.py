"""``--method suppress``: the target under the class model's priors, outliers suppressed.

For the stored layers below the target: (a) the seed's outlier suppression (every
few steps pick the units that are outliers under the class model and descend on
them) and (b) the model's negative log-likelihood weighted by ``prior_weight``,
each sample with a prior of its own at the deepest layers (``prior_spread``); with
random zoom, tilt and jitter and total variation, and at small inputs a noise start
and a blur every few steps (:meth:`~actstats.synth.methods.base.RenderConfig.at_size`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from actstats.errors import ActstatsError
from actstats.net.network import Network
from actstats.synth import objectives as obj
from actstats.synth.jobs import Job, Synthesis, batch_rows
from actstats.synth.methods.base import RenderConfig, regularizers, render_jobs, target
from actstats.synth.methods.registry import register
from actstats.synth.priors import layer_prior, outlier_suppression, prior_layers, spread_prior
from actstats.synth.render import Progress

__all__ = ["SuppressConfig", "suppress_objective", "synthesize_suppress"]


@dataclass(frozen=True)
class SuppressConfig(RenderConfig):
    """The loop's knobs with suppress's defaults, plus its priors.

    ``layers`` are the stored layers the priors use; ``None`` means every stored
    layer below the target's. (fc priors once swamped the target, p(class) 0.96 ->
    0.3 on the digits; the cause was the near-singular low-rank fit of post-ReLU
    layers, since fixed: with Ledoit-Wolf covariances fc6/fc7 priors lower every
    Fréchet distance and keep p(class) at 0.99.)
    ``prior_spread`` gives each sample its own prior at the deepest ``spread_layers``
    prior layers (``None``: all): the class Gaussian split as ``N(m_i, (1 - spread) C)``
    with ``m_i ~ N(mu, spread C)`` drawn from the seed
    (:func:`~actstats.synth.priors.spread_prior`); one shared Gaussian is mode-seeking
    (judge diversity 0.52 -> 1.67 at 0.9 on 3 digit classes, Fréchet distances no worse).

    What carried it to a real ImageNet network at 224 px (EfficientNet-Lite1, five
    classes, validation split, judged by Lite0; issue 11): the FFT basis (``param``
    ``auto``), a heavy-tailed prior (``prior_dof`` 1: a grey start is hundreds of
    z-units out in the middle blocks and a Gaussian NLL's gradient there was 10-100x
    the target's, so samples settled as class-coloured textures at p(class) 0.07),
    ``prior_depth`` 0.6 (priors on the shallow blocks only: priors on the blocks just
    below the logits kept p(class) <= 0.46) and a random zoom and tilt each step. At 64
    steps judge top-1 went from 0/5 (FFT basis, Gaussian priors on every block) to 5/5
    and KID in the judge's features from 0.13 to 0.03. On the digits the same dof,
    depth and transforms keep the judge's agreement at 1.0.
    """

    param: str = "auto"
    l2_weight: float = 1e-2
    tv_weight: float = 0.5
    jitter: float = 1 / 16
    scale: float = 0.1
    rotate: float = 10.0
    blur_every: int = 4
    blur_sigma: float = 1 / 64
    init: str = "noise"
    init_std: float = 0.5
    layers: tuple[str, ...] | None = None
    prior_weight: float = 3.0
    suppress_weight: float = 0.05
    suppress_every: int = 10
    suppress_threshold: float = 3.0
    prior_spread: float = 0.9
    spread_layers: int | None = None
    prior_dof: float | None = 1.0
    prior_depth: float = 0.6


def suppress_objective(
    network: Network, job: Job, config: SuppressConfig, seed: int = 0
) -> obj.Objective:
    """One job's loss: the target, the regularizers, and per prior layer the NLL and
    the outlier suppression."""
    loss = -config.target_weight * target(job) + regularizers(config)
    chosen = prior_layers(network, job, config.layers, config.prior_depth)
    assert job.stats is not None  # checked by prior_layers
    depth = len(chosen) if config.spread_layers is None else config.spread_layers
    spread = set(chosen[len(chosen) - depth :]) if config.prior_spread else set()
    if not 0.0 <= config.prior_spread < 1.0:
        raise ActstatsError(f"prior_spread {config.prior_spread}: use 0 <= spread < 1")
    rng = np.random.RandomState(seed)
    for layer in chosen:
        if config.prior_weight and layer in spread:
            loss = loss + config.prior_weight * spread_prior(
                job.stats, layer, job.n, config.prior_spread, rng, dof=config.prior_dof
            )
        elif config.prior_weight:
            loss = loss + config.prior_weight * layer_prior(job.stats, layer, dof=config.prior_dof)
        loss = loss + outlier_suppression(
            job.stats,
            layer,
            config.suppress_weight,
            config.suppress_threshold,
            config.suppress_every,
        )
    return loss


@register("suppress", SuppressConfig)
def synthesize_suppress(
    network: Network,
    jobs: Sequence[Job],
    *,
    config: SuppressConfig,
    seed: int = 0,
    progress: Progress | None = None,
) -> Synthesis:
    """Every job under its class priors, one batch (job i's priors drawn from ``seed + i``)."""
    per_job = [suppress_objective(network, j, config, seed + i) for i, j in enumerate(jobs)]
    result = render_jobs(network, list(jobs), per_job, config, seed, progress)
    return Synthesis(result, batch_rows(jobs), result.tracked["target"])
