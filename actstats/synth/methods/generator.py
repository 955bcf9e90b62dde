"""``--method generator``: DGN-AM's activation maximization through a trained decoder.

Nguyen et al. (2016) search the code ``h`` of a decoder ``G`` (trained to invert
a layer of an encoder, :mod:`actstats.synth.generator_train`) so that the
image ``G(h)`` maximizes a unit of the network under study, which need not be
the encoder. Their rule, kept here:

* the loss is ``-unit(G(h)) + l2_weight * mean((h / std)^2)``, the L2 decay on
  the code (per unit in the store's standard deviations, so one weight suits
  any layer);
* after every step each unit of ``h`` is clipped to ``[0, max(mean + 3 std, 0)]``
  with the mean and standard deviation of the layer over the store's real images
  (saved inside the generator file).

What DGN-AM did not have: with ``prior_weight > 0`` the class model's negative
log-likelihood of ``h`` (the statistics ``actstats fit`` learned for that layer)
is added, so the code stays where the class's real codes are
(``generator+nll`` in the realism benchmark).

``h`` is optimized in standardized units ``u = (h - mean) / std`` (Adam's step
then means the same for every unit); the clip box is the same box in ``u``.
Several jobs run as one batch, each with its own objective rows.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.nn import functional as F  # noqa: N812

from actstats.errors import ActstatsError
from actstats.net.network import Network
from actstats.synth import objectives as obj
from actstats.synth.generator import UpConvGenerator
from actstats.synth.jobs import Job, Synthesis, batch_rows
from actstats.synth.methods.base import RenderConfig, target, transforms
from actstats.synth.methods.registry import register
from actstats.synth.param import StepHook
from actstats.synth.priors import layer_prior
from actstats.synth.render import Progress, render

__all__ = [
    "DecoderPrior",
    "GeneratorMethodConfig",
    "code_l2",
    "code_violation",
    "synthesize_generator",
]


@dataclass(frozen=True)
class DecoderPrior:
    """A trained decoder and the encoder layer (with its stored reduction) its code is."""

    generator: UpConvGenerator
    layer: str
    reduction: str = "full"


@dataclass(frozen=True)
class GeneratorMethodConfig(RenderConfig):
    """The code's loop: ``l2_weight`` is DGN-AM's decay of h, ``init_std`` the spread of
    the seeded start around the mean code (in stds), ``prior_weight`` the class-model NLL
    of h; ``decoder`` is the trained generator (``sample --generator GEN``).

    lr 0.05 / start spread 0.5 drove every sample to one corner of the clip box (pixel
    diversity ~3 on the digits, real ~12); 0.01 left some samples below p 0.5; 0.02 / 1.0
    keeps p ~1.
    """

    l2_weight: float = 1e-2
    init_std: float = 1.0
    lr: float = 0.02
    prior_weight: float = 0.0
    decoder: DecoderPrior | None = field(default=None, compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready parameters (the decoder by its layer; its file is the user's)."""
        data = {
            f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "decoder"
        }
        data["decoder_layer"] = self.decoder.layer if self.decoder is not None else None
        return data


def code_l2(std: torch.Tensor) -> obj.Objective:
    """DGN-AM's L2 decay of the code: ``mean((h / std)^2)`` per image."""
    return obj.Objective(
        lambda a: (a[obj.CODE] / std.to(a[obj.CODE])).pow(2).mean(1), {obj.CODE}, "code_l2()"
    )


def code_violation(lower: torch.Tensor, upper: torch.Tensor) -> obj.Objective:
    """How far the code lies outside the clip box, per image (0 when the rule holds)."""

    def fn(a: obj.Acts) -> torch.Tensor:
        h = a[obj.CODE]
        over = (h - upper.to(h)).clamp_min(0.0) + (lower.to(h) - h).clamp_min(0.0)
        return over.amax(1)

    return obj.Objective(fn, {obj.CODE}, "code_violation()")


def _clip_code(lower: torch.Tensor, upper: torch.Tensor) -> StepHook:
    def hook(params: list[torch.Tensor], step: int) -> None:
        u = params[0]
        u.copy_(torch.maximum(torch.minimum(u, upper.to(u)), lower.to(u)))

    return hook


def _job_objective(job: Job, prior: DecoderPrior, config: GeneratorMethodConfig) -> obj.Objective:
    loss = -config.target_weight * target(job)
    if config.l2_weight:
        loss = loss + config.l2_weight * code_l2(prior.generator.code_std)
    if config.prior_weight:
        stats = job.stats
        if stats is None or prior.layer not in stats.layers:
            raise ActstatsError(
                f"--neuron {job.neuron}: the class-model NLL on the code needs layer "
                f"{prior.layer} in the model file; fit it or pass --prior-weight 0"
            )
        loss = loss + config.prior_weight * layer_prior(stats, prior.layer, read=obj.CODE)
    return loss


@register("generator", GeneratorMethodConfig)
def synthesize_generator(
    network: Network,
    jobs: Sequence[Job],
    *,
    config: GeneratorMethodConfig,
    seed: int = 0,
    progress: Progress | None = None,
) -> Synthesis:
    """Optimize every job's codes in one batch; the images are ``G(h)`` (see the module)."""
    decoder = config.decoder
    if decoder is None:
        raise ActstatsError("--method generator needs --generator GEN (see train-generator)")
    G = decoder.generator.to(network.device).eval().requires_grad_(False)
    counts = [job.n for job in jobs]
    mean, std = G.code_mean.float(), G.code_std.float()
    lower, upper = (b.float() for b in G.code_bounds())
    u_low, u_high = (lower - mean) / std, (upper - mean) / std
    generator = torch.Generator().manual_seed(seed)
    start = torch.randn(sum(counts), len(mean), generator=generator).to(network.device)
    u = (config.init_std * start).clamp(u_low, u_high).requires_grad_(True)
    size = network.preprocessing.crop

    def codes() -> torch.Tensor:
        return mean + std * u

    def image_fn() -> torch.Tensor:
        x = G(codes())
        if x.shape[-1] != size:  # the network under study may see another size than E
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        return network.preprocessing.normalize(x)

    result = render(
        network,
        obj.by_rows([_job_objective(j, decoder, config) for j in jobs], counts),
        ([u], image_fn),
        steps=config.steps,
        lr=config.lr,
        transforms=transforms(config),
        generator=generator,
        step_hooks=[_clip_code(u_low, u_high)],
        track={
            "target": obj.by_rows([target(j) for j in jobs], counts),
            "code_violation": code_violation(lower, upper),
        },
        progress=progress,
        latent=codes,
    )
    return Synthesis(result, batch_rows(jobs), result.tracked["target"])
