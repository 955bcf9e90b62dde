"""What the sampling methods share: the loop's knobs and the pieces built from them.

:class:`RenderConfig` holds the knobs of the one pixel loop (steps, learning rate,
parameterization, start, regularizers, transforms); each method's config extends it
with its own fields and defaults. The helpers turn a config into the objective terms
and :func:`~actstats.synth.render.render` arguments every method uses.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from actstats.errors import ActstatsError
from actstats.net.network import Network
from actstats.synth import objectives as obj
from actstats.synth.jobs import Job
from actstats.synth.param import StepHook, blur_pixels, clip_pixels, fft_image, pixel_image
from actstats.synth.render import Progress, RenderResult, render
from actstats.synth.transforms import Transform, compose, flip, jitter, scale_rotate

__all__ = ["RenderConfig", "image_param", "regularizers", "target", "transforms"]


@dataclass(frozen=True)
class RenderConfig:
    """The shared loop's knobs; each regularizer is switched off by a zero.

    ``init`` is the pixel start: ``zero`` (Simonyan's) or ``noise`` of ``init_std``
    (normalized units), which gives each sample its own mode. ``param`` is ``pixel``,
    ``fft`` (decorrelated) or ``auto`` (by input size, :meth:`at_size`); ``blur_every``
    blurs the pixels by ``blur_sigma`` every that many steps; ``clip`` keeps them in the
    valid range. ``jitter`` (pixels) and ``blur_sigma`` below 1 are fractions of the
    input side (:meth:`at_size`). ``scale`` and ``rotate`` zoom and tilt each step's
    input at random (:func:`~actstats.synth.transforms.scale_rotate`).
    """

    steps: int = 200
    lr: float = 0.05
    param: str = "pixel"
    init: str = "zero"
    init_std: float = 0.01
    l2_weight: float = 0.0
    tv_weight: float = 0.0
    jitter: float = 0
    flip: bool = False
    scale: float = 0.0
    rotate: float = 0.0
    blur_every: int = 0
    blur_sigma: float = 0.5
    clip: bool = True
    target_weight: float = 1.0

    def at_size(self, size: int) -> RenderConfig:
        """``jitter`` and ``blur_sigma`` below 1 are fractions of the input side: in pixels here.

        Regularizers act on image structure, whose scale grows with the input:
        1/16 of the side is the 2 px the 32 px digits were tuned with and 14 px on
        a 224 px ImageNet input, where 2 px left samples adversarial textures.

        ``param="auto"`` is ``fft`` from 64 px up and ``pixel`` below. Measured on the
        validation splits: on EfficientNet-Lite1 at 224 px, pixel ascent with the blur
        left ``suppress`` flat grey (p(class) 0.002) where the FFT basis reached the
        class; on the 32 px digits the FFT basis cut the judge's agreement from 1.0 to
        0.42 (a 32 px image has no high-frequency excess for it to remove).
        """
        jitter = round(self.jitter * size) if 0 < self.jitter < 1 else int(self.jitter)
        sigma = self.blur_sigma * size if self.blur_sigma < 1 else self.blur_sigma
        return dataclasses.replace(
            self, jitter=jitter, blur_sigma=sigma, param=_resolve_param(self.param, size)
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready parameters for ``samples.json``."""
        data = dataclasses.asdict(self)
        for key, value in data.items():
            if isinstance(value, tuple):
                data[key] = list(value)
        return data


#: Inputs from this side up get the FFT basis under ``param="auto"`` (:meth:`RenderConfig.at_size`).
FFT_MIN_SIZE = 64


def _resolve_param(param: str, size: int) -> str:
    if param != "auto":
        return param
    return "fft" if size >= FFT_MIN_SIZE else "pixel"


def target(job: Job) -> obj.Objective:
    """The job's unit (its layer, index and position)."""
    return obj.unit(job.neuron.layer, job.neuron.index, job.neuron.yx, job.neuron.layout)


def regularizers(config: RenderConfig) -> obj.Objective | float:
    """L2 and total variation, weighted as configured (0.0 when both are off)."""
    total: obj.Objective | float = 0.0
    if config.l2_weight:
        total = config.l2_weight * obj.l2() + total
    if config.tv_weight:
        total = config.tv_weight * obj.total_variation() + total
    return total


def transforms(config: RenderConfig) -> Transform | None:
    """Zoom/rotation, jitter and flips, composed (None when all are off)."""
    parts = [scale_rotate(config.scale, config.rotate)] if config.scale or config.rotate else []
    parts += [jitter(config.jitter)] if config.jitter else []
    parts += [flip()] if config.flip else []
    return compose(*parts) if parts else None


def image_param(
    network: Network, n: int, config: RenderConfig, generator: torch.Generator
) -> tuple[tuple[list[torch.Tensor], Callable[[], torch.Tensor]], list[StepHook]]:
    """The image parameterization and the step hooks (blur, clip) of the config."""
    size = network.preprocessing.crop
    param = _resolve_param(config.param, size)
    if param == "fft":
        return fft_image(
            n, size, network.preprocessing, device=network.device, generator=generator
        ), []
    if param != "pixel":
        raise ActstatsError(f"param {config.param!r}: use pixel, fft or auto")
    hooks = []
    if config.blur_every:
        hooks.append(blur_pixels(config.blur_sigma, config.blur_every))
    if config.clip:
        hooks.append(clip_pixels(network.preprocessing))
    return pixel_image(
        n, size, device=network.device, init=config.init, std=config.init_std, generator=generator
    ), hooks


def render_jobs(
    network: Network,
    jobs: list[Job],
    per_job: list[obj.Objective],
    config: RenderConfig,
    seed: int,
    progress: Progress | None = None,
) -> RenderResult:
    """The one batched image render of a method: job i's rows follow ``per_job[i]``.

    Builds the image parameterization from a generator seeded with ``seed``, runs
    :func:`actstats.synth.render.render` with the config's steps, lr and transforms, and
    tracks every job's target (``result.tracked["target"]``).
    """
    counts = [job.n for job in jobs]
    generator = torch.Generator().manual_seed(seed)
    param, hooks = image_param(network, sum(counts), config, generator)
    return render(
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
