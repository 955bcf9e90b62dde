"""``--method code-prior``: optimize a layer's activation code, then decode it to pixels.

Nguyen et al. (2016, DGN-AM) search the code space of a layer instead of pixel
space and keep each code unit in the range real images produce: clipped to
``[0, mean + 3 std]`` (here the fitted class model's mean and standard
deviation of that unit). Where DGN-AM decodes with a learned generator, this
method decodes by inverting the network below the layer (Mahendran & Vedaldi):
pixels whose activations match the code, with L2, total variation and jitter.

1. ``optimize_code``: the code ``h`` replaces the layer's output through a
   forward hook, so only the layers above it run on ``h``; Adam ascends the
   target unit in ``[0, 1]`` coordinates of the clip box and clips every step.
2. the pixels are rendered on the shared loop to match ``h`` in z units.

The code layer is ``--layers``' last entry, else the shallowest stored,
unreduced fc layer below the target (DGN-AM used fc6).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from actstats.errors import ActstatsError
from actstats.net.network import Network, ResolvedNeuron
from actstats.synth import objectives as obj
from actstats.synth.jobs import ClassStats, Job, Synthesis, batch_rows, unit_std
from actstats.synth.methods.base import RenderConfig, regularizers, render_jobs
from actstats.synth.methods.registry import register
from actstats.synth.render import Progress

__all__ = [
    "CodePriorConfig",
    "CodeResult",
    "choose_code_layer",
    "code_bounds",
    "forward_from_code",
    "optimize_code",
    "synthesize_code_prior",
]


@dataclass(frozen=True)
class CodePriorConfig(RenderConfig):
    """The loop's knobs with code-prior's defaults; ``steps`` serve the code and then the
    pixels each; ``layers``' last entry names the code layer (``None``: chosen). The
    pixels live in the FFT basis from 64 px up (``param`` ``auto``, as ``suppress``)."""

    param: str = "auto"
    l2_weight: float = 1e-3
    tv_weight: float = 0.5
    jitter: float = 1 / 32
    layers: tuple[str, ...] | None = None


@dataclass
class CodeResult:
    """Optimized codes (n, D) inside ``[lower, upper]`` and the target per step (steps, n)."""

    layer: str
    codes: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    target_history: np.ndarray


def code_bounds(model: Any) -> tuple[np.ndarray, np.ndarray]:
    """DGN-AM's clip box per unit: ``[0, max(mean + 3 std, 0)]`` of the fitted model."""
    upper = np.maximum(np.asarray(model.mean_, dtype=np.float64) + 3.0 * unit_std(model), 0.0)
    return np.zeros_like(upper), upper


def _one_value_per_unit(network: Network, layer: str) -> bool:
    """A vector layer (layout NC), or a map pooled to one position (C x 1 x 1)."""
    return (
        network.layer_layout(layer).kind == "NC" or math.prod(network.output_shape(layer)[1:]) == 1
    )


def choose_code_layer(
    network: Network, stats: ClassStats, neuron: ResolvedNeuron, layers: Sequence[str] | None
) -> str:
    """The layer whose code is optimized (see the module docstring)."""
    depth = network.layer_depth
    top = depth(neuron.layer)
    if layers:
        layer = layers[-1]
        candidates = [layer] if layer in stats.layers else []
    else:
        candidates = [ly for ly in stats.layers if _one_value_per_unit(network, ly)]
    candidates = [  # one stored value per unit: an fc layer, or a globally pooled map
        ly
        for ly in candidates
        if depth(ly) < top
        and (
            str(stats.reductions.get(ly, "full")) == "full"
            or math.prod(network.output_shape(ly)[1:]) == 1
        )
    ]
    if not candidates:
        raise ActstatsError(
            f"--neuron {neuron}: code-prior needs a stored layer below {neuron.layer} kept whole "
            f"(reduction full); stored: {', '.join(stats.layers)}; pass --layers LAYER"
        )
    return min(candidates, key=depth)


def forward_from_code(network: Network, layer: str, codes: torch.Tensor, read: str) -> torch.Tensor:
    """Activations of ``read`` when ``layer``'s output is replaced by ``codes`` (n, D).

    The layers below run once on a one-image blank input and are discarded, so
    the cost is the network above ``layer`` on n codes.
    """
    module = dict(network.module.named_modules()).get(network.module_name(layer))
    if module is None:
        raise ActstatsError(f"--layers {layer}: a code layer must be a module, not a graph node")

    def replace(_m: torch.nn.Module, _i: Any, out: torch.Tensor) -> torch.Tensor:
        return codes.reshape(codes.shape[0], *out.shape[1:]).to(out)

    size = network.preprocessing.crop
    blank = torch.zeros(1, 3, size, size, device=network.device)
    handle = module.register_forward_hook(replace)
    try:
        return network.activations(blank, [read])[read]
    finally:
        handle.remove()


def optimize_code(
    network: Network,
    neuron: ResolvedNeuron,
    stats: ClassStats,
    n: int,
    *,
    layer: str | None = None,
    steps: int = 200,
    lr: float = 0.05,
    seed: int = 0,
) -> CodeResult:
    """Ascend ``neuron`` over the code of ``layer`` inside the fitted clip box.

    Starts from the code of the blank (dataset-mean) image plus a little seeded
    noise, so the n codes differ.
    """
    layer = layer or choose_code_layer(network, stats, neuron, None)
    lower, upper = code_bounds(stats.models[layer])
    dev = network.device
    lo = torch.as_tensor(lower, dtype=torch.float32, device=dev)
    span = torch.as_tensor(upper - lower, dtype=torch.float32, device=dev).clamp_min(1e-6)
    size = network.preprocessing.crop
    with torch.inference_mode():
        start = network.activations(torch.zeros(1, 3, size, size, device=dev), [layer])[layer]
    generator = torch.Generator().manual_seed(seed)
    noise = 0.05 * torch.randn(n, lo.numel(), generator=generator).to(dev)
    u = ((start.flatten(1) - lo) / span + noise).clamp(0.0, 1.0).detach().requires_grad_(True)
    optimizer = torch.optim.Adam([u], lr=lr)
    history = []
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        value = obj.unit_value(
            forward_from_code(network, layer, lo + u * span, neuron.layer),
            neuron.index,
            neuron.yx,
            neuron.layout,
        )
        (-value.sum()).backward()
        optimizer.step()
        with torch.no_grad():
            u.clamp_(0.0, 1.0)
        history.append(value.detach().cpu().numpy())
    codes = np.clip((lo + u.detach() * span).double().cpu().numpy(), lower, upper)  # f32 -> f64
    return CodeResult(layer, codes, lower, upper, np.asarray(history).reshape(steps, n))


@register("code-prior", CodePriorConfig)
def synthesize_code_prior(
    network: Network,
    jobs: Sequence[Job],
    *,
    config: CodePriorConfig,
    seed: int = 0,
    progress: Progress | None = None,
) -> Synthesis:
    """Every job's codes, then one batched pixel inversion of all of them."""
    chains: list[dict[str, np.ndarray]] = []
    per_job = []
    for i, job in enumerate(jobs):
        if job.stats is None:
            raise ActstatsError(
                f"--neuron {job.neuron}: code-prior needs class statistics; pass --class NAME"
            )
        layer = choose_code_layer(network, job.stats, job.neuron, config.layers)
        code = optimize_code(
            network,
            job.neuron,
            job.stats,
            job.n,
            layer=layer,
            steps=config.steps,
            lr=config.lr,
            seed=seed + i,
        )
        chains.append({layer: code.codes})
        per_job.append(
            obj.match_activations(layer, code.codes, "full", unit_std(job.stats.models[layer]))
            + regularizers(config)
        )
    result = render_jobs(network, list(jobs), per_job, config, seed, progress)
    stages = [list(chain) for chain in chains]
    return Synthesis(result, batch_rows(jobs), result.tracked["target"], chains, stages)
