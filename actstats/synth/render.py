"""The one optimization loop every synthesis method runs.

``render`` parameterizes a batch of images, transforms them, reads the layers
the objective needs through forward hooks, and steps the optimizer on the sum
of per-image losses. It returns the images and the histories; it never saves,
prints or draws (a ``progress`` callback lets the caller show a bar).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from actstats.errors import ActstatsError
from actstats.net.network import Network
from actstats.synth.objectives import CODE, INPUT, Objective
from actstats.synth.param import ImageFn, StepHook
from actstats.synth.transforms import Transform

__all__ = ["Progress", "RenderResult", "render"]

#: ``progress(step, total_steps, mean_loss)`` after each step.
Progress = Callable[[int, int, float], None]


@dataclass
class RenderResult:
    """Images (normalized network inputs, CPU) and per-step histories, one column per image.

    ``loss_history`` has shape (steps, N); ``tracked[name]`` likewise for every
    objective passed as ``track`` (e.g. the target unit's value).
    """

    images: torch.Tensor
    loss_history: np.ndarray
    tracked: dict[str, np.ndarray] = field(default_factory=dict)
    steps: int = 0
    seconds: float = 0.0


def render(
    network: Network,
    objective: Objective,
    param: tuple[list[torch.Tensor], ImageFn],
    *,
    steps: int,
    lr: float = 0.05,
    transforms: Transform | None = None,
    generator: torch.Generator | None = None,
    step_hooks: Sequence[StepHook] = (),
    track: Mapping[str, Objective] | None = None,
    progress: Progress | None = None,
    latent: Callable[[], torch.Tensor] | None = None,
) -> RenderResult:
    """Minimize ``objective`` over the parameters ``param`` with Adam for ``steps`` steps.

    Parameters
    ----------
    network : Network
        Supplies activations; its device is where the parameters must live.
    objective : Objective
        Loss per image (N,); the batch loss is its sum, so images stay independent.
    param : (params, image_fn)
        From :mod:`actstats.synth.param`; reusing one continues from its state.
    transforms : callable, optional
        ``t(x, generator)`` applied before each forward pass.
    generator : torch.Generator, optional
        CPU generator for the transforms (seed it for reproducible runs).
    step_hooks : sequence of callables
        ``hook(params, step)`` after each step, without gradients (clipping, blur).
    track : mapping of name to Objective, optional
        Values recorded every step (not optimized), e.g. ``{"target": unit(...)}``.
    progress : callable, optional
        ``progress(step, steps, mean_loss)``.
    latent : callable, optional
        The code the images are decoded from (a generator parameterization);
        objectives read it as ``acts[CODE]``.
    """
    if steps < 0:
        raise ActstatsError(f"--steps {steps}: must be >= 0")
    params, image_fn = param
    track = dict(track or {})
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    layers = set(objective.layers).union(*(t.layers for t in track.values()))
    layers -= {INPUT, CODE}
    optimizer = torch.optim.Adam(params, lr=lr)
    losses: list[np.ndarray] = []
    tracked: dict[str, list[np.ndarray]] = {name: [] for name in track}
    start = time.perf_counter()
    for step in range(steps):
        optimizer.zero_grad(set_to_none=True)
        x = image_fn()
        if transforms is not None:
            x = transforms(x, generator)
        acts = dict(network.activations(x, sorted(layers))) if layers else {}
        acts[INPUT] = x
        if latent is not None:
            acts[CODE] = latent()
        with torch.no_grad():
            objective.update({k: v.detach() for k, v in acts.items()}, step)
        loss = objective(acts)
        loss.sum().backward()
        optimizer.step()
        with torch.no_grad():
            for hook in step_hooks:
                hook(params, step)
            losses.append(loss.detach().cpu().numpy())
            for name, t in track.items():
                tracked[name].append(t(acts).detach().cpu().numpy())
        if progress is not None:
            progress(step + 1, steps, float(losses[-1].mean()))
    with torch.no_grad():
        images = image_fn().detach().cpu().clone()
    n = images.shape[0]
    return RenderResult(
        images=images,
        loss_history=np.asarray(losses).reshape(steps, n),
        tracked={k: np.asarray(v).reshape(steps, n) for k, v in tracked.items()},
        steps=steps,
        seconds=time.perf_counter() - start,
    )
