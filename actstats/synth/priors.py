"""Priors from fitted class statistics, as objectives: NLL, per-sample spread, outliers.

Each takes a job's :class:`~actstats.synth.jobs.ClassStats` and returns an
:class:`~actstats.synth.objectives.Objective` on a stored layer, in the reduction
the layer was stored with. :func:`prior_layers` picks the stored layers below a
target by :meth:`Network.layer_depth <actstats.net.network.Network.layer_depth>`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from actstats.errors import ActstatsError
from actstats.net.network import Network
from actstats.synth import objectives as obj
from actstats.synth.jobs import ClassStats, Job, unit_std

__all__ = [
    "layer_prior",
    "outlier_suppression",
    "prior_layers",
    "shallowest",
    "spatial_prior",
    "spread_prior",
]


def prior_layers(
    network: Network, job: Job, layers: Sequence[str] | None, depth: float = 1.0
) -> list[str]:
    """``layers`` (checked against the model file), else the stored layers below the target.

    ``depth`` keeps the shallowest fraction of those (at least one): the layers just
    below a class unit hold the class evidence itself, and a class model fitted on a
    few dozen images per class pins them near the mean real image's score, so their
    prior fights the target (on EfficientNet-Lite1 at 224 px, priors on all six stored
    blocks kept p(class) at 0.07-0.46; on the shallowest four, 1.00).
    """
    if job.stats is None:
        raise ActstatsError(
            f"--neuron {job.neuron}: this method needs class statistics; pass --class NAME"
        )
    if layers is not None:
        missing = [ly for ly in layers if ly not in job.stats.layers]
        if missing:
            raise ActstatsError(
                f"--layers {','.join(missing)}: not in the model file; "
                f"available: {', '.join(job.stats.layers)}"
            )
        return list(layers)
    limit = network.layer_depth(job.neuron.layer)
    below = sorted(
        (ly for ly in job.stats.layers if network.layer_depth(ly) < limit),
        key=network.layer_depth,
    )
    return shallowest(below, depth, "prior_depth")


def shallowest(layers: Sequence[str], fraction: float, option: str) -> list[str]:
    """The first ``fraction`` of ``layers`` (shallow to deep), at least one when any;
    ``option`` names the knob in the error for a fraction outside ``(0, 1]``."""
    if not 0.0 < fraction <= 1.0:
        raise ActstatsError(f"{option} {fraction}: use 0 < {option} <= 1")
    return list(layers[: max(1, math.ceil(fraction * len(layers)))])


def spatial_prior(
    network: Network, stats: ClassStats, layer: str, weight: float
) -> tuple[obj.Objective | float, list[str]]:
    """``weight`` times the class NLL of the stored spatial layers at or below ``layer``,
    and those layers (invert and dream: fc priors swamp their other terms)."""
    limit = network.layer_depth(layer)
    chosen = [
        ly
        for ly in stats.layers
        if network.layer_depth(ly) <= limit and network.layer_layout(ly).spatial
    ]
    total: obj.Objective | float = 0.0
    for ly in chosen:
        total = weight * layer_prior(stats, ly) + total
    return total, chosen


def layer_prior(
    stats: ClassStats, layer: str, *, read: str | None = None, dof: float | None = None
) -> obj.Objective:
    """Negative log-likelihood per unit of ``layer`` under the class model (Gaussian or mixture).

    ``read`` names another entry of the activations holding ``layer``'s values
    already reduced (e.g. :data:`~actstats.synth.objectives.CODE`, a decoder's code).
    ``dof`` makes a Gaussian model's prior heavy-tailed
    (:func:`~actstats.synth.objectives.gaussian_prior`).
    """
    model = stats.models[layer]
    key, reduction = (read, "full") if read else (layer, stats.reductions.get(layer, "full"))
    if hasattr(model, "components"):
        return obj.mixture_prior(
            key, model.components(), model.basis_mean_, model.basis_, reduction
        )
    return obj.gaussian_prior(key, model.quadratic_factors(), reduction, dof=dof)


def spread_prior(
    stats: ClassStats,
    layer: str,
    n: int,
    spread: float,
    rng: np.random.RandomState,
    *,
    dof: float | None = None,
) -> obj.Objective:
    """Each of ``n`` samples its own prior: the class Gaussian split hierarchically.

    ``x = m_i + e`` with ``m_i ~ N(mu, spread C)`` drawn per sample and
    ``e ~ N(0, (1 - spread) C)``: the prior of sample i is ``N(m_i, (1 - spread) C)``,
    whose mode is ``m_i`` and whose average over draws is the class Gaussian.
    """
    models = stats.models
    model = models.gaussian(layer) if hasattr(models, "gaussian") else models[layer]
    mean = np.asarray(model.mean_)
    means = mean + np.sqrt(spread) * (model.sample(n, random_state=rng) - mean)
    return obj.gaussian_prior(
        layer,
        model.quadratic_factors(),
        stats.reductions.get(layer, "full"),
        means=means,
        cov_scale=1.0 - spread,
        dof=dof,
    )


def outlier_suppression(
    stats: ClassStats, layer: str, weight: float, threshold: float, every: int
) -> obj.Objective | float:
    """The seed's method, weighted: every ``every`` steps, descend on the units of
    ``layer`` whose activations are outliers (|z| > ``threshold``) under the class model.

    0.0 (no term) where it is off, ``weight`` 0 or ``every`` <= 0: the one rule for
    ``suppress`` and ``ancestral`` alike.
    """
    if not weight or every <= 0:
        return 0.0
    model = stats.models[layer]
    return weight * obj.outlier_suppression(
        layer,
        np.asarray(model.mean_),
        unit_std(model),
        _outlier_selector(model, threshold),
        stats.reductions.get(layer, "full"),
        every=every,
    )


def _outlier_selector(model: object, threshold: float) -> Callable[[np.ndarray], np.ndarray]:
    def select(X: np.ndarray) -> np.ndarray:
        return np.abs(model.unit_zscores(X)) > threshold  # type: ignore[attr-defined]

    return select
