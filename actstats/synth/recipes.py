"""The synthesis methods as recipes of objectives over the one render loop.

* ``simonyan``: ``-S_c(I) + lambda ||I||^2`` from the zero image (the baseline).
* ``suppress``: the target plus, for the stored layers below it, (a) the seed's
  outlier suppression (every few steps pick the units that are outliers under the
  class model and descend on them) and (b) the model's negative log-likelihood
  weighted by ``prior_weight``; from small noise, with jitter, total variation
  and a blur every few steps.
* ``ancestral``: sample the stored layers top-down from the class's conditionals
  with the unit fixed at a high quantile (rectified layers clamped at 0), then
  invert them deepest first.

Several jobs (neuron + class statistics + count) run as one batch: each job's
objective applies to its own rows (:func:`~actstats.synth.objectives.by_rows`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from actstats.errors import ActstatsError
from actstats.network import Network, ResolvedNeuron
from actstats.synth import objectives as obj
from actstats.synth.param import blur_pixels, clip_pixels, fft_image, pixel_image
from actstats.synth.render import Progress, RenderResult, render
from actstats.synth.transforms import Transform, compose, flip, jitter

__all__ = [
    "METHODS",
    "ClassStats",
    "Job",
    "SynthConfig",
    "Synthesis",
    "default_config",
    "layer_prior",
    "sample_chain",
    "spread_prior",
    "synthesize",
    "unit_std",
]

METHODS = ("simonyan", "suppress", "ancestral", "code-prior")


@dataclass(frozen=True)
class SynthConfig:
    """Every knob of the shared loop; each regularizer is switched off by a zero.

    ``layers`` are the stored layers the priors (``suppress``) or the chain
    (``ancestral``) use; ``None`` means every stored layer below the target's.
    (fc priors once swamped the target, p(class) 0.96 -> 0.3 on the digits; the
    cause was the near-singular low-rank fit of post-ReLU layers, since fixed:
    with Ledoit-Wolf covariances fc6/fc7 priors lower every Fréchet distance
    and keep p(class) at 0.99.)
    ``init`` is the pixel start: ``zero`` (Simonyan's) or ``noise`` of
    ``init_std`` (normalized units), which gives each sample its own mode.
    ``prior_spread`` (``suppress``) gives each sample its own prior at the deepest
    ``spread_layers`` prior layers (``None``: all): the class Gaussian split as
    ``N(m_i, (1 - spread) C)`` with ``m_i ~ N(mu, spread C)`` drawn from the seed
    (:func:`spread_prior`); one shared Gaussian is mode-seeking (judge diversity
    0.52 -> 1.67 at 0.9 on 3 digit classes, Fréchet distances no worse).
    """

    steps: int = 200
    lr: float = 0.05
    param: str = "pixel"
    init: str = "zero"
    init_std: float = 0.01
    l2_weight: float = 0.0
    tv_weight: float = 0.0
    jitter: int = 0
    flip: bool = False
    blur_every: int = 0
    blur_sigma: float = 0.5
    clip: bool = True
    prior_weight: float = 0.0
    suppress_weight: float = 0.0
    suppress_every: int = 10
    suppress_threshold: float = 3.0
    target_weight: float = 1.0
    quantile: float = 0.95
    layers: tuple[str, ...] | None = None
    prior_spread: float = 0.0
    spread_layers: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready parameters for ``samples.json``."""
        data = dataclasses.asdict(self)
        data["layers"] = list(self.layers) if self.layers is not None else None
        return data


_DEFAULTS: dict[str, dict[str, Any]] = {
    "simonyan": {"l2_weight": 1e-2},
    "suppress": {
        "l2_weight": 1e-2,
        "tv_weight": 0.5,
        "jitter": 2,
        "blur_every": 4,
        "init": "noise",
        "init_std": 0.5,
        "prior_weight": 3.0,
        "suppress_weight": 0.05,
        "prior_spread": 0.9,
    },
    "ancestral": {
        "l2_weight": 1e-3,
        "tv_weight": 0.5,
        "jitter": 2,
        "blur_every": 4,
        "lr": 0.05,
        "target_weight": 0.1,
    },
    # ``steps`` serve the code and then the pixels each (actstats.synth.code_prior)
    "code-prior": {"l2_weight": 1e-3, "tv_weight": 0.5, "jitter": 1, "lr": 0.05},
}


def default_config(method: str, **overrides: Any) -> SynthConfig:
    """The tuned defaults of ``method`` with ``overrides`` (``None`` values ignored)."""
    if method not in _DEFAULTS:
        raise ActstatsError(f"--method {method!r}: choose one of {', '.join(METHODS)}")
    values = _DEFAULTS[method] | {k: v for k, v in overrides.items() if v is not None}
    try:
        return SynthConfig(**values)
    except TypeError as exc:
        raise ActstatsError(f"synthesis option: {exc}") from None


@dataclass(frozen=True)
class ClassStats:
    """One class's fitted statistics, as the recipes read them.

    ``models[layer]`` is a layer model (``quadratic_factors()`` or ``components()``,
    ``unit_zscores``, ``quantiles_``); ``models.conditional(layer, given=...)`` gives
    the chain's conditionals; ``reductions[layer]`` is the stored reduction
    (``full``/``mean``/``grid:S``); ``layers`` run shallow to deep.
    """

    name: str
    models: Any
    reductions: Mapping[str, str]
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

    ``chains[i][layer]`` (ancestral) holds the activations job i's images were
    inverted to, ``stages[i]`` its layers in inversion order (deepest first).
    """

    result: RenderResult
    rows: list[slice]
    target_history: np.ndarray
    chains: list[dict[str, np.ndarray]] = field(default_factory=list)
    stages: list[list[str]] = field(default_factory=list)


def unit_std(model: Any) -> np.ndarray:
    """Per-unit standard deviation of a Gaussian or mixture layer model."""
    var = model.marginal_variances() if hasattr(model, "marginal_variances") else model.variances_
    return np.sqrt(np.maximum(np.asarray(var, dtype=np.float64), 1e-12))


def layer_prior(stats: ClassStats, layer: str) -> obj.Objective:
    """Negative log-likelihood per unit of ``layer`` under the class model (Gaussian or mixture)."""
    model = stats.models[layer]
    reduction = stats.reductions.get(layer, "full")
    if hasattr(model, "components"):
        return obj.mixture_prior(
            layer, model.components(), model.basis_mean_, model.basis_, reduction
        )
    return obj.gaussian_prior(layer, model.quadratic_factors(), reduction)


def _outlier_selector(model: Any, threshold: float) -> Callable[[np.ndarray], np.ndarray]:
    def select(X: np.ndarray) -> np.ndarray:
        return np.abs(model.unit_zscores(X)) > threshold

    return select


def _layer_order(network: Network) -> Callable[[str], int]:
    names = network.layer_names()
    return lambda layer: names.index(layer) if layer in names else len(names)


def _prior_layers(network: Network, job: Job, config: SynthConfig) -> list[str]:
    """``config.layers``, else the stored layers below the target."""
    if job.stats is None:
        raise ActstatsError(
            f"--neuron {job.neuron}: this method needs class statistics; pass --class NAME"
        )
    if config.layers is not None:
        missing = [ly for ly in config.layers if ly not in job.stats.layers]
        if missing:
            raise ActstatsError(
                f"--layers {','.join(missing)}: not in the model file; "
                f"available: {', '.join(job.stats.layers)}"
            )
        return list(config.layers)
    order = _layer_order(network)
    depth = order(job.neuron.layer)
    return [ly for ly in job.stats.layers if order(ly) < depth]


def _target(job: Job) -> obj.Objective:
    return obj.unit(job.neuron.layer, job.neuron.index, job.neuron.yx)


def _regularizers(config: SynthConfig) -> obj.Objective | float:
    total: obj.Objective | float = 0.0
    if config.l2_weight:
        total = config.l2_weight * obj.l2() + total
    if config.tv_weight:
        total = config.tv_weight * obj.total_variation() + total
    return total


def spread_prior(
    stats: ClassStats, layer: str, n: int, spread: float, rng: np.random.RandomState
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
    )


def _suppress_objective(
    network: Network, job: Job, config: SynthConfig, seed: int = 0
) -> obj.Objective:
    loss = -config.target_weight * _target(job) + _regularizers(config)
    assert job.stats is not None  # checked by _prior_layers
    prior_layers = _prior_layers(network, job, config)
    depth = len(prior_layers) if config.spread_layers is None else config.spread_layers
    spread = set(prior_layers[len(prior_layers) - depth :]) if config.prior_spread else set()
    if not 0.0 <= config.prior_spread < 1.0:
        raise ActstatsError(f"prior_spread {config.prior_spread}: use 0 <= spread < 1")
    rng = np.random.RandomState(seed)
    for layer in prior_layers:
        model = job.stats.models[layer]
        if config.prior_weight and layer in spread:
            loss = loss + config.prior_weight * spread_prior(
                job.stats, layer, job.n, config.prior_spread, rng
            )
        elif config.prior_weight:
            loss = loss + config.prior_weight * layer_prior(job.stats, layer)
        if config.suppress_weight and config.suppress_every > 0:
            loss = loss + config.suppress_weight * obj.outlier_suppression(
                layer,
                np.asarray(model.mean_),
                unit_std(model),
                _outlier_selector(model, config.suppress_threshold),
                job.stats.reductions.get(layer, "full"),
                every=config.suppress_every,
            )
    return loss


def _transforms(config: SynthConfig) -> Transform | None:
    parts = ([jitter(config.jitter)] if config.jitter else []) + ([flip()] if config.flip else [])
    return compose(*parts) if parts else None


def _param(
    network: Network,
    n: int,
    config: SynthConfig,
    generator: torch.Generator,
) -> tuple[tuple[list[torch.Tensor], Callable[[], torch.Tensor]], list]:
    size = network.preprocessing.crop
    if config.param == "fft":
        return fft_image(
            n, size, network.preprocessing, device=network.device, generator=generator
        ), []
    if config.param != "pixel":
        raise ActstatsError(f"param {config.param!r}: use pixel or fft")
    hooks = []
    if config.blur_every:
        hooks.append(blur_pixels(config.blur_sigma, config.blur_every))
    if config.clip:
        hooks.append(clip_pixels(network.preprocessing))
    return pixel_image(
        n, size, device=network.device, init=config.init, std=config.init_std, generator=generator
    ), hooks


def synthesize(
    network: Network,
    jobs: Sequence[Job],
    method: str,
    *,
    config: SynthConfig,
    seed: int = 0,
    progress: Progress | None = None,
) -> Synthesis:
    """Run ``method`` for every job in one batch on ``network.device``.

    Deterministic for a given ``seed`` on the CPU.
    """
    if method not in METHODS:
        raise ActstatsError(f"--method {method!r}: choose one of {', '.join(METHODS)}")
    if (
        method == "code-prior"
    ):  # optimizes a layer's code, not pixels; that module builds on this one
        from actstats.synth.code_prior import synthesize_code_prior

        return synthesize_code_prior(network, jobs, config=config, seed=seed, progress=progress)
    counts = [job.n for job in jobs]
    rows = [
        slice(a, b) for a, b in zip(np.cumsum([0, *counts[:-1]]), np.cumsum(counts), strict=True)
    ]
    generator = torch.Generator().manual_seed(seed)
    param, hooks = _param(network, sum(counts), config, generator)
    target = obj.by_rows([_target(j) for j in jobs], counts)
    common = {
        "lr": config.lr,
        "transforms": _transforms(config),
        "generator": generator,
        "step_hooks": hooks,
        "track": {"target": target},
    }
    if method == "ancestral":
        return _ancestral(network, jobs, config, seed, param, rows, common, progress)
    if method == "simonyan":
        per_job = [-config.target_weight * _target(j) + _regularizers(config) for j in jobs]
    else:
        per_job = [_suppress_objective(network, j, config, seed + i) for i, j in enumerate(jobs)]
    result = render(
        network,
        obj.by_rows(per_job, counts),
        param,
        steps=config.steps,
        progress=progress,
        **common,
    )
    return Synthesis(result, rows, result.tracked["target"])


# ------------------------------------------------------------------ ancestral
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
    if stats.reductions.get(top, "full").startswith("grid") or neuron.yx is not None:
        raise ActstatsError(
            f"--neuron {neuron}: ancestral sampling needs the unit as one stored value; "
            f"{top} is stored as {stats.reductions.get(top)}; use --method suppress"
        )
    rng = np.random.RandomState(random_state)
    value = _unit_quantile(stats.models[top], neuron.index, quantile)
    chain = {
        top: stats.models.conditional(top, given=(top, neuron.index)).sample(
            np.full(n, value), random_state=rng
        )
    }
    for deeper, layer in zip(layers[::-1], layers[::-1][1:], strict=False):
        drawn = stats.models.conditional(layer, given=deeper).sample(
            chain[deeper], random_state=rng
        )
        chain[layer] = np.maximum(drawn, _support_floor(stats.models[layer])) if rectify else drawn
    return chain


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


def _ancestral(
    network: Network,
    jobs: Sequence[Job],
    config: SynthConfig,
    seed: int,
    param,
    rows: list[slice],
    common: dict,
    progress: Progress | None,
) -> Synthesis:
    order = _layer_order(network)
    chains: list[dict[str, np.ndarray]] = []
    stages: list[list[str]] = []
    for i, job in enumerate(jobs):
        below = set(_prior_layers(network, job, config)) - {job.neuron.layer}
        layers = [*sorted(below, key=order), job.neuron.layer]
        chains.append(
            sample_chain(
                job.stats,
                job.neuron,
                layers,
                job.n,  # type: ignore[arg-type]
                quantile=config.quantile,
                random_state=seed + i,
            )
        )
        stages.append(layers[::-1])
    n_stages = max(len(s) for s in stages)
    per_stage = [config.steps // n_stages] * n_stages
    per_stage[-1] += config.steps - sum(per_stage)
    results: list[RenderResult] = []
    done = 0
    for s, n_steps in enumerate(per_stage):
        per_job = [
            _inversion_objective(job, chain, order_[: s + 1], config)
            for job, chain, order_ in zip(jobs, chains, stages, strict=True)
        ]

        def stage_progress(step: int, _total: int, loss: float, done: int = done) -> None:
            if progress is not None:
                progress(done + step, config.steps, loss)

        results.append(
            render(
                network,
                obj.by_rows(per_job, [j.n for j in jobs]),
                param,
                steps=n_steps,
                progress=stage_progress,
                **common,
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
    return Synthesis(merged, rows, merged.tracked["target"], chains, stages)


def _inversion_objective(
    job: Job, chain: Mapping[str, np.ndarray], layers: Sequence[str], config: SynthConfig
) -> obj.Objective:
    """Match the sampled activations of ``layers`` (in z units) plus the regularizers."""
    stats = job.stats
    loss = -config.target_weight * _target(job) + _regularizers(config)
    for layer in layers:
        reduction = stats.reductions.get(layer, "full")
        loss = loss + obj.match_activations(
            layer, chain[layer], reduction, unit_std(stats.models[layer])
        )
    return loss
