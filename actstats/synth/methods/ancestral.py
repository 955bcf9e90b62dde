"""``--method ancestral``: sample the activations top-down, then recover the pixels.

Sample the stored layers top-down from the class's conditionals with the unit fixed
at a high quantile of its real values (rectified layers clamped at 0), then invert
them deepest first on the shared loop, matching each layer in z units while the
target drives the unit. The pixels are fitted to the shallow part of the chain
(``match_depth``) in a robust loss: on EfficientNet-Lite1 at 224 px, matching every
sampled block (drawn from conditionals fitted on a few dozen images per class) kept
p(class) at 0.13 and the judge at 1/5; the shallowest 60 %, robustly, reached 4/5
(validation split, 64 steps). The seed's outlier suppression runs on the matched
layers too (``suppress_weight``), with the target at weight 0.5: on the same
validation split (5 seeds, 200 steps) it took KID in the judge's features from 0.13
to 0.003 at judge top-1 1.00 (suppression at target weight 0.1 reached KID -0.01 but
top-1 0.76: the target lost to it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from actstats.errors import ActstatsError
from actstats.net.network import Network, ResolvedNeuron
from actstats.net.reduce import parse_reduction
from actstats.synth import objectives as obj
from actstats.synth.jobs import ClassStats, Job, Synthesis, batch_rows, unit_std
from actstats.synth.methods.base import RenderConfig, image_param, regularizers, target, transforms
from actstats.synth.methods.registry import register
from actstats.synth.priors import outlier_suppression, prior_layers, shallowest
from actstats.synth.render import Progress, RenderResult, render

__all__ = ["AncestralConfig", "sample_chain", "synthesize_ancestral"]


@dataclass(frozen=True)
class AncestralConfig(RenderConfig):
    """The loop's knobs with ancestral's defaults, plus the chain's.

    ``layers``: the stored layers of the chain (``None``: every stored layer below the
    target's); ``quantile``: where in the unit's real distribution it is fixed.
    ``match_depth``: the shallowest fraction of the chain's layers below the unit that
    the pixels are fitted to (the chain is still drawn top-down through all of them);
    the unit itself is driven by the target. ``robust``: match in ``log(1 + msd)``
    (:func:`~actstats.synth.objectives.match_activations`). ``suppress_weight``: the
    seed's outlier suppression on the matched layers as well (as ``suppress``: every
    ``suppress_every`` steps, descend on the units beyond ``suppress_threshold``
    class-model sds); 0 turns it off.
    """

    param: str = "auto"
    l2_weight: float = 1e-3
    tv_weight: float = 0.5
    jitter: float = 1 / 16
    scale: float = 0.1
    rotate: float = 10.0
    blur_every: int = 4
    blur_sigma: float = 1 / 64
    target_weight: float = 0.5
    layers: tuple[str, ...] | None = None
    quantile: float = 0.95
    match_depth: float = 0.6
    robust: bool = True
    suppress_weight: float = 0.05
    suppress_every: int = 10
    suppress_threshold: float = 3.0


def sample_chain(
    stats: ClassStats,
    neuron: ResolvedNeuron,
    layers: Sequence[str],
    n: int,
    *,
    quantile: float = 0.95,
    random_state: int = 0,
    rectify: bool = True,
) -> dict[str, np.ndarray]:
    """Sample activations top-down with the unit fixed at a high quantile of real values.

    ``layers`` run shallow to deep and end with the unit's layer, which must be
    stored with the unit as one of its reduced values (``full`` or ``mean``).
    The unit's layer is drawn from ``p(z_L | unit = v)``, then each shallower
    layer from ``p(z_k | z_k+1)``; with ``rectify`` each draw of a layer whose real
    activations are non-negative (post-ReLU) is clamped at 0 before the next
    layer is conditioned on it. Returns ``{layer: (n, D_layer)}``.
    """
    top = neuron.layer
    if not layers or layers[-1] != top:
        raise ActstatsError(
            f"--neuron {neuron}: ancestral sampling needs the unit's layer {top} in the model "
            f"file (stored: {', '.join(stats.layers)}); collect it or use --method suppress"
        )
    column = _stored_column(stats, neuron)
    if column is None:
        raise ActstatsError(
            f"--neuron {neuron}: ancestral sampling needs the unit as one stored value; "
            f"{top} is stored as {stats.reductions.get(top)}; use --method suppress"
        )
    rng = np.random.RandomState(random_state)
    value = _unit_quantile(stats.models[top], column, quantile)
    chain = {
        top: stats.models.conditional(top, given=(top, column)).sample(
            np.full(n, value), random_state=rng
        )
    }
    for deeper, layer in zip(layers[::-1], layers[::-1][1:], strict=False):
        drawn = stats.models.conditional(layer, given=deeper).sample(
            chain[deeper], random_state=rng
        )
        chain[layer] = np.maximum(drawn, _support_floor(stats.models[layer])) if rectify else drawn
    return chain


def _stored_column(stats: ClassStats, neuron: ResolvedNeuron) -> int | None:
    """The column of the unit in its layer's stored rows (None where it is not one value).

    An fc unit is its index; a channel is its ``mean`` part's column (NCHW, NHWC or
    tokens alike); a channel at ``@y,x`` needs the layer stored ``full``.
    """
    reduction = stats.reductions.get(neuron.layer, "full")
    if isinstance(reduction, str):
        reduction = parse_reduction(reduction)
    if reduction.layout is None and neuron.layout is not None:
        reduction = reduction.with_layout(neuron.layout)
    if neuron.shape is None:  # a neuron made by hand: only an fc unit stored whole is known
        return neuron.index if neuron.yx is None and str(reduction) == "full" else None
    return reduction.column(neuron.shape, neuron.index, neuron.yx)


def _support_floor(model: Any) -> float:
    """0 where the layer's real activations are non-negative (post-ReLU), else -inf.

    A Gaussian conditional puts mass below zero that a rectified unit can never
    reach; drawing such values and inverting them only pushes the image to
    switch units off harder. A layer is taken as rectified when every unit's
    lowest stored quantile of the real activations is >= 0.
    """
    q = getattr(model, "quantiles_", None)
    if q is None:
        return -np.inf
    return 0.0 if float(np.min(np.asarray(q)[0])) >= 0.0 else -np.inf


def _unit_quantile(model: Any, index: int, quantile: float) -> float:
    levels = getattr(model, "quantile_levels_", None)
    q = getattr(model, "quantiles_", None)
    if q is None or levels is None:
        return float(model.mean_[index] + 2.0 * unit_std(model)[index])
    return float(np.interp(quantile, np.asarray(levels), np.asarray(q)[:, index]))


def _chains(
    network: Network, jobs: Sequence[Job], config: AncestralConfig, seed: int
) -> tuple[list[dict[str, np.ndarray]], list[list[str]]]:
    """Each job's sampled chain and its layers deepest first (job i drawn from ``seed + i``)."""
    chains, stages = [], []
    for i, job in enumerate(jobs):
        below = set(prior_layers(network, job, config.layers)) - {job.neuron.layer}
        layers = [*sorted(below, key=network.layer_depth), job.neuron.layer]
        matched = shallowest(layers[:-1], config.match_depth, "match_depth")
        chains.append(
            sample_chain(
                job.stats,  # type: ignore[arg-type]  # checked by prior_layers
                job.neuron,
                layers,
                job.n,
                quantile=config.quantile,
                random_state=seed + i,
            )
        )
        stages.append(matched[::-1] if config.match_depth < 1.0 and matched else layers[::-1])
    return chains, stages


@register("ancestral", AncestralConfig)
def synthesize_ancestral(
    network: Network,
    jobs: Sequence[Job],
    *,
    config: AncestralConfig,
    seed: int = 0,
    progress: Progress | None = None,
) -> Synthesis:
    """Sample every job's chain, then invert the chains in stages, deepest layer first.

    The steps are split evenly over the stages; stage s matches the deepest s + 1 layers.
    """
    counts = [job.n for job in jobs]
    generator = torch.Generator().manual_seed(seed)
    param, hooks = image_param(network, sum(counts), config, generator)
    chains, stages = _chains(network, jobs, config, seed)
    n_stages = max(len(s) for s in stages)
    per_stage = [config.steps // n_stages] * n_stages
    per_stage[-1] += config.steps - sum(per_stage)
    track = {"target": obj.by_rows([target(j) for j in jobs], counts)}
    results: list[RenderResult] = []
    done = 0
    for s, n_steps in enumerate(per_stage):
        per_job = [
            _inversion_objective(job, chain, order[: s + 1], config)
            for job, chain, order in zip(jobs, chains, stages, strict=True)
        ]

        def stage_progress(step: int, _total: int, loss: float, done: int = done) -> None:
            if progress is not None:
                progress(done + step, config.steps, loss)

        results.append(
            render(
                network,
                obj.by_rows(per_job, counts),
                param,
                steps=n_steps,
                lr=config.lr,
                transforms=transforms(config),
                generator=generator,
                step_hooks=hooks,
                track=track,
                progress=stage_progress,
            )
        )
        done += n_steps
    merged = RenderResult(
        images=results[-1].images,
        loss_history=np.concatenate([r.loss_history for r in results]),
        tracked={"target": np.concatenate([r.tracked["target"] for r in results])},
        steps=config.steps,
        seconds=sum(r.seconds for r in results),
    )
    return Synthesis(merged, batch_rows(jobs), merged.tracked["target"], chains, stages)


def _inversion_objective(
    job: Job, chain: Mapping[str, np.ndarray], layers: Sequence[str], config: AncestralConfig
) -> obj.Objective:
    """Match the sampled activations of ``layers`` (in z units) plus the regularizers."""
    stats = job.stats
    assert stats is not None  # checked by prior_layers
    loss = -config.target_weight * target(job) + regularizers(config)
    for layer in layers:
        reduction = stats.reductions.get(layer, "full")
        loss = loss + obj.match_activations(
            layer, chain[layer], reduction, unit_std(stats.models[layer]), robust=config.robust
        )
        if layer != job.neuron.layer:  # the unit's own layer is the target's
            loss = loss + outlier_suppression(
                stats,
                layer,
                config.suppress_weight,
                config.suppress_threshold,
                config.suppress_every,
            )
    return loss
