"""Feature inversion: an image whose activations at a layer match a target's.

Mahendran & Vedaldi (2015) recover what a layer keeps of an image by
minimizing ``||phi(x) - phi(x0)||^2 / ||phi(x0)||^2`` plus an alpha-norm
(here L2) and a total-variation term over ``x``, with jitter so the result is
not an adversarial pattern. With fitted statistics the class model's NLL of the
stored layers at or below the inverted one is added, so the inversion is drawn
toward activations real images of the class produce (only spatial layers: the
recipes measured that fc priors swamp the other terms).

Runs on the shared loop (:func:`actstats.synth.render.render`); no file I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from actstats.errors import ActstatsError
from actstats.net.network import Network
from actstats.synth import objectives as obj
from actstats.synth.jobs import ClassStats
from actstats.synth.param import clip_pixels, pixel_image
from actstats.synth.priors import spatial_prior
from actstats.synth.render import Progress, render
from actstats.synth.transforms import jitter

__all__ = [
    "Inversion",
    "InvertConfig",
    "activation_error",
    "invert",
]


@dataclass(frozen=True)
class InvertConfig:
    """Knobs of the inversion; ``prior_weight`` only acts when statistics are given."""

    steps: int = 200
    lr: float = 0.05
    l2_weight: float = 1e-3
    tv_weight: float = 0.2
    jitter: int = 1
    prior_weight: float = 0.05
    seed: int = 0


@dataclass
class Inversion:
    """Recovered network inputs (N, 3, H, W, CPU), with the relative activation error.

    ``error_history`` (steps, N) is ``||phi(x) - phi(x0)||^2 / ||phi(x0)||^2`` per step;
    ``prior_layers`` the stored layers whose NLL was added (empty without statistics).
    """

    images: torch.Tensor
    error_history: np.ndarray
    loss_history: np.ndarray
    prior_layers: list[str]


def _relative_error(layer: str, target: torch.Tensor) -> obj.Objective:
    flat = target.detach().flatten(1).cpu()
    rms = flat.pow(2).mean(1, keepdim=True).sqrt().clamp_min(1e-8)
    # Mean squared error in units of the image's RMS activation is Mahendran's
    # ||phi(x) - phi(x0)||^2 / ||phi(x0)||^2; one scale per image, so one term per row.
    per_row = [
        obj.match_activations(layer, flat[i : i + 1], "full", np.full(flat.shape[1], float(r)))
        for i, r in enumerate(rms[:, 0])
    ]
    return obj.by_rows(per_row, [1] * len(per_row))


def activation_error(
    network: Network, images: torch.Tensor, layer: str, target: torch.Tensor
) -> np.ndarray:
    """``||phi(x) - phi(x0)||^2 / ||phi(x0)||^2`` per image, without transforms."""
    with torch.inference_mode():
        z = network.activations(images.to(network.device), [layer])[layer].flatten(1)
        t = target.to(z).flatten(1)
        return ((z - t).pow(2).sum(1) / t.pow(2).sum(1).clamp_min(1e-12)).double().cpu().numpy()


def invert(
    network: Network,
    inputs: torch.Tensor,
    layer: str,
    *,
    stats: ClassStats | None = None,
    config: InvertConfig | None = None,
    progress: Progress | None = None,
) -> Inversion:
    """Recover images from the activations ``inputs`` produce at ``layer``.

    Parameters
    ----------
    inputs : tensor of shape (N, 3, H, W)
        Preprocessed images whose ``layer`` activations are the targets.
    layer : str
        Alias or module name (``conv4_3``).
    stats : ClassStats, optional
        Fitted class statistics; their NLL becomes a prior (``config.prior_weight``).
    """
    config = config or InvertConfig()
    network.module_name(layer)  # unknown layers fail here, naming the choices
    if inputs.dim() != 4:
        raise ActstatsError(f"inputs of shape {tuple(inputs.shape)}: expected (N, 3, H, W)")
    with torch.inference_mode():
        target = network.activations(inputs.to(network.device), [layer])[layer].clone()
    match = _relative_error(layer, target)
    loss = match + config.l2_weight * obj.l2() + config.tv_weight * obj.total_variation()
    prior_layers: list[str] = []
    if stats is not None and config.prior_weight:
        prior, prior_layers = spatial_prior(network, stats, layer, config.prior_weight)
        loss = loss + prior
    generator = torch.Generator().manual_seed(config.seed)
    n, _, h, _ = inputs.shape
    result = render(
        network,
        loss,
        pixel_image(n, h, device=network.device, init="zero"),
        steps=config.steps,
        lr=config.lr,
        transforms=jitter(config.jitter) if config.jitter else None,
        generator=generator,
        step_hooks=[clip_pixels(network.preprocessing)],
        track={"error": match},
        progress=progress,
    )
    return Inversion(result.images, result.tracked["error"], result.loss_history, prior_layers)
