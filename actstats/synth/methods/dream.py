"""Deep dream / caricature: amplify what a layer already sees in an image.

Starting from the image, ascend ``mean(A_L(x)^2)`` (Mordvintsev et al. 2015;
Mahendran & Vedaldi's "caricatures"), so whatever the layer responds to grows.
Octaves work coarse to fine: at octave ``k`` the free parameter is a detail
image at ``size / scale^(octaves-1-k)`` pixels, upsampled onto the current
image, so large structures change first and fine ones last. The network always
sees full-size inputs, which keeps every layer (fc included) and every fitted
reduction valid at every octave. With fitted statistics the class NLL of the
stored spatial layers at or below ``L`` is added, keeping the caricature near
activations real images of the class produce.

Runs on the shared loop (:func:`actstats.synth.render.render`); no file I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F  # noqa: N812

from actstats.errors import ActstatsError
from actstats.net.network import Network
from actstats.synth import objectives as obj
from actstats.synth.jobs import ClassStats
from actstats.synth.param import ImageFn
from actstats.synth.priors import spatial_prior
from actstats.synth.render import Progress, render
from actstats.synth.transforms import jitter

__all__ = ["Dream", "DreamConfig", "activation_energy", "dream", "layer_energy"]


@dataclass(frozen=True)
class DreamConfig:
    """Knobs of the dream; ``prior_weight`` only acts when statistics are given."""

    octaves: int = 3
    octave_scale: float = 1.4
    steps: int = 30  # per octave
    lr: float = 0.02
    tv_weight: float = 0.05
    jitter: int = 1
    prior_weight: float = 0.05
    seed: int = 0


@dataclass
class Dream:
    """Dreamed network inputs (N, 3, H, W, CPU) and the layer's energy per step (steps, N)."""

    images: torch.Tensor
    energy_history: np.ndarray
    prior_layers: list[str]


def layer_energy(layer: str) -> obj.Objective:
    """``mean(A_L^2)`` per image: the quantity a dream raises."""
    return obj.Objective(lambda a: a[layer].flatten(1).pow(2).mean(1), {layer}, f"energy({layer})")


def activation_energy(network: Network, images: torch.Tensor, layer: str) -> np.ndarray:
    """``mean(A_L^2)`` of each image, without transforms."""
    with torch.inference_mode():
        a = network.activations(images.to(network.device), [layer])[layer]
        return a.flatten(1).pow(2).mean(1).double().cpu().numpy()


def _detail_param(base: torch.Tensor, size: int, network: Network) -> tuple[list, ImageFn]:
    detail = torch.zeros(base.shape[0], 3, size, size, device=base.device, requires_grad=True)
    low, high = (b.to(base) for b in network.preprocessing.pixel_bounds())
    out_size = base.shape[-2:]

    def image_fn() -> torch.Tensor:
        up = F.interpolate(detail, size=out_size, mode="bilinear", align_corners=False)
        return torch.maximum(torch.minimum(base + up, high), low)

    return [detail], image_fn


def dream(
    network: Network,
    inputs: torch.Tensor,
    layer: str,
    *,
    stats: ClassStats | None = None,
    config: DreamConfig | None = None,
    progress: Progress | None = None,
) -> Dream:
    """Amplify ``layer``'s response to ``inputs`` (N, 3, H, W) over ``config.octaves`` scales."""
    config = config or DreamConfig()
    network.module_name(layer)
    if config.octaves < 1 or config.octave_scale <= 1.0:
        raise ActstatsError(
            f"--octaves {config.octaves} / octave scale {config.octave_scale}: "
            "need octaves >= 1 and a scale > 1"
        )
    size = inputs.shape[-1]
    smallest = size / config.octave_scale ** (config.octaves - 1)
    if smallest < 2:
        raise ActstatsError(
            f"--octaves {config.octaves}: the coarsest octave would be {smallest:.1f} px; "
            "use fewer octaves"
        )
    energy = layer_energy(layer)
    loss: obj.Objective = -1.0 * energy + config.tv_weight * obj.total_variation()
    prior_layers: list[str] = []
    if stats is not None and config.prior_weight:
        prior, prior_layers = spatial_prior(network, stats, layer, config.prior_weight)
        loss = loss + prior
    generator = torch.Generator().manual_seed(config.seed)
    current = inputs.detach().to(network.device)
    history: list[np.ndarray] = []
    total = config.octaves * config.steps
    for k in range(config.octaves):
        octave_size = max(2, round(size / config.octave_scale ** (config.octaves - 1 - k)))

        def octave_progress(step: int, _n: int, value: float, done: int = k * config.steps) -> None:
            if progress is not None:
                progress(done + step, total, value)

        params, image_fn = _detail_param(current, octave_size, network)
        result = render(
            network,
            loss,
            (params, image_fn),
            steps=config.steps,
            lr=config.lr,
            transforms=jitter(config.jitter) if config.jitter else None,
            generator=generator,
            track={"energy": energy},
            progress=octave_progress,
        )
        history.append(result.tracked["energy"])
        current = result.images.to(network.device)
    return Dream(current.cpu(), np.concatenate(history), prior_layers)
