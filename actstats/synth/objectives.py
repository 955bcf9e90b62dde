"""Composable objectives: small loss objects that add, subtract, scale and sum.

An :class:`Objective` maps the activations of one forward pass to a loss per
image, shape (N,), that :func:`actstats.synth.render.render` *minimizes*. A
per-image loss (not a batch scalar) keeps the images of a batch independent, so
a batch of 64 samples is 64 separate optimizations run at once. ``acts`` holds
each requested layer's output under its name and the network input under
:data:`INPUT`.

Factories such as :func:`unit` are decorated with :func:`objective_factory`,
which records a description (``"unit(fc8, 3)"``) used in ``samples.json``.

>>> obj = -1.0 * unit("fc8", 3) + 1e-3 * l2()
>>> obj.layers == frozenset({"fc8", INPUT})
True
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from actstats.errors import ActstatsError
from actstats.net.layout import Layout
from actstats.net.reduce import Reduction, parse_reduction, unit_value
from actstats.stats.base import QuadraticFactors

__all__ = [
    "CODE",
    "INPUT",
    "Objective",
    "by_rows",
    "gaussian_prior",
    "l2",
    "match_activations",
    "mixture_prior",
    "objective_factory",
    "outlier_suppression",
    "reduce_torch",
    "squared_mahalanobis_torch",
    "total_variation",
    "unit",
    "unit_value",
]

#: Key of the (transformed) network input in ``acts``.
INPUT = "input"
#: Key of the latent code in ``acts`` when the images are decoded from one (``generator``).
CODE = "code"

Acts = Mapping[str, torch.Tensor]
RefreshFn = Callable[[Acts, int], None]


class Objective:
    """A loss per image, ``fn(acts) -> (N,)``, with the layers it reads and a description.

    ``refresh`` hooks (from :func:`outlier_suppression`) are called by the render
    loop with the detached activations and the step number before each loss, so
    stateful terms can re-select what they penalize; composition keeps them.
    """

    def __init__(
        self,
        fn: Callable[[Acts], torch.Tensor],
        layers: Iterable[str],
        description: str,
        refresh: Sequence[RefreshFn] = (),
    ) -> None:
        self.fn = fn
        self.layers = frozenset(layers)
        self.description = description
        self.refresh = tuple(refresh)

    def __call__(self, acts: Acts) -> torch.Tensor:
        return self.fn(acts)

    def update(self, acts: Acts, step: int) -> None:
        """Run the refresh hooks (no gradients flow through them)."""
        for hook in self.refresh:
            hook(acts, step)

    def __add__(self, other: Objective | float) -> Objective:
        if isinstance(other, (int, float)) and other == 0:
            return self  # a term that is off (weight 0) adds no work to each step
        if isinstance(other, (int, float)):
            return Objective(
                lambda a: self(a) + other,
                self.layers,
                f"{self.description} + {other}",
                self.refresh,
            )
        return Objective(
            lambda a: self(a) + other(a),
            self.layers | other.layers,
            f"{self.description} + {other.description}",
            self.refresh + other.refresh,
        )

    __radd__ = __add__

    def __neg__(self) -> Objective:
        return -1.0 * self

    def __sub__(self, other: Objective | float) -> Objective:
        return self + (-other)

    def __rsub__(self, other: float) -> Objective:
        return (-self) + other

    def __mul__(self, weight: float) -> Objective:
        if not isinstance(weight, (int, float)):
            raise TypeError("objectives are scaled by numbers; add objectives with +")
        return Objective(
            lambda a: weight * self(a),
            self.layers,
            f"{weight:g} * ({self.description})",
            self.refresh,
        )

    __rmul__ = __mul__

    def __repr__(self) -> str:
        return f"Objective({self.description})"


def objective_factory(fn: Callable[..., Objective]) -> Callable[..., Objective]:
    """Give the objective a factory returns the description ``name(arg, ...)``."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Objective:
        obj = fn(*args, **kwargs)
        shown = [_short(a) for a in args] + [f"{k}={_short(v)}" for k, v in kwargs.items()]
        obj.description = f"{fn.__name__}({', '.join(shown)})"
        return obj

    return wrapper


def _short(value: Any) -> str:
    if isinstance(value, (np.ndarray, torch.Tensor)):
        return f"<{type(value).__name__} {tuple(value.shape)}>"
    if isinstance(value, QuadraticFactors):
        return f"<factors D={value.dim}>"
    if isinstance(value, (list, tuple)) and len(value) > 4:
        return f"<{len(value)} items>"
    return repr(value) if isinstance(value, str) else str(value)


# ------------------------------------------------------------------ reductions
def reduce_torch(x: torch.Tensor, reduction: str | Reduction) -> torch.Tensor:
    """Apply a stored layer's reduction to a batch, differentiably: (N, ...) -> (N, D).

    The collector's own :class:`~actstats.net.reduce.Reduction`, with the layer's
    layout (NCHW, NHWC, tokens), so synthesis compares exactly what the statistics
    describe. A bare string has no layout: 4-D is read as NCHW, vectors are flattened.
    """
    if isinstance(reduction, str):
        if x.dim() != 4:
            return x.flatten(1)
        reduction = parse_reduction(reduction)
    return reduction(x)


# ------------------------------------------------------------------ factories
@objective_factory
def unit(
    layer: str, index: int, yx: tuple[int, int] | None = None, layout: Layout | None = None
) -> Objective:
    """The unit's activation (to be maximized, so use ``-unit(...)`` in a loss).

    For a spatial or token layer channel ``index`` averaged over space / patch
    tokens, or its value at grid position ``yx`` (see :func:`~actstats.net.reduce.unit_value`).
    """

    def fn(acts: Acts) -> torch.Tensor:
        return unit_value(acts[layer], index, yx, layout)

    return Objective(fn, {layer}, "")


@objective_factory
def l2() -> Objective:
    """Squared L2 norm of the network input (Simonyan's ``||I||^2``), per pixel."""
    return Objective(lambda a: a[INPUT].pow(2).flatten(1).mean(1), {INPUT}, "")


@objective_factory
def total_variation(beta: float = 2.0) -> Objective:
    """Mean ``(|dx|^2 + |dy|^2)^(beta/2)`` over the input: penalizes high-frequency noise."""

    def fn(acts: Acts) -> torch.Tensor:
        x = acts[INPUT]
        dx = x[:, :, :-1, 1:] - x[:, :, :-1, :-1]
        dy = x[:, :, 1:, :-1] - x[:, :, :-1, :-1]
        return (dx.pow(2) + dy.pow(2) + 1e-8).pow(beta / 2).flatten(1).mean(1)

    return Objective(fn, {INPUT}, "")


def _factors_torch(
    f: QuadraticFactors, device: torch.device, dtype: torch.dtype
) -> dict[str, torch.Tensor | None]:
    def t(a: np.ndarray | None) -> torch.Tensor | None:
        return None if a is None else torch.as_tensor(np.asarray(a), dtype=dtype, device=device)

    return {"mean": t(f.mean), "diag": t(f.diag), "plus": t(f.plus), "minus": t(f.minus)}


def squared_mahalanobis_torch(z: torch.Tensor, f: dict[str, torch.Tensor | None]) -> torch.Tensor:
    """The :class:`QuadraticFactors` distance on tensors: (N, D) -> (N,)."""
    c = z - f["mean"]
    d2 = torch.zeros(z.shape[0], dtype=z.dtype, device=z.device)
    if f["diag"] is not None:
        d2 = d2 + (c * f["diag"]).pow(2).sum(1)
    if f["plus"] is not None:
        d2 = d2 + (c @ f["plus"]).pow(2).sum(1)
    if f["minus"] is not None:
        d2 = d2 - (c @ f["minus"]).pow(2).sum(1)
    return d2


class _Cache:
    """Tensors made once per (device, dtype), so objectives carry no device of their own."""

    def __init__(self, make: Callable[[torch.device, torch.dtype], Any]) -> None:
        self._make = make
        self._store: dict[tuple[str, torch.dtype], Any] = {}

    def get(self, like: torch.Tensor) -> Any:
        key = (str(like.device), like.dtype)
        if key not in self._store:
            self._store[key] = self._make(like.device, like.dtype)
        return self._store[key]


@objective_factory
def gaussian_prior(
    layer: str,
    factors: QuadraticFactors,
    reduction: str | Reduction = "full",
    *,
    per_unit: bool = True,
    means: np.ndarray | None = None,
    cov_scale: float = 1.0,
    dof: float | None = None,
) -> Objective:
    """Negative log-likelihood of the layer's (reduced) activations under a Gaussian.

    ``0.5 * (d2 + log det C + D log 2 pi)``; divided by D when ``per_unit`` so one
    weight suits layers of any width. ``means`` (N, D) gives each row its own mean
    and ``cov_scale`` scales the covariance: ``N(means[i], cov_scale * C)``.

    ``dof`` swaps the Gaussian for the multivariate Student-t of the same mean and
    scale matrix with ``dof * D`` degrees of freedom (``dof`` per unit):
    ``0.5 (nu + D) log(1 + d2 / nu)`` plus its constant. Near the data it is the
    Gaussian; far from it the gradient falls as ``1 / d2``, so an image that starts
    far from every real one (a grey start is hundreds of z-units out in the middle
    layers) is not swept into the prior before the target can act.
    """
    if cov_scale <= 0:
        raise ActstatsError(f"gaussian_prior: cov_scale must be > 0, got {cov_scale}")
    if dof is not None and dof <= 0:
        raise ActstatsError(f"gaussian_prior: dof must be > 0, got {dof}")

    def make(dev: torch.device, dt: torch.dtype) -> dict[str, torch.Tensor | None]:
        f = _factors_torch(factors, dev, dt)
        if means is not None:
            f["mean"] = torch.as_tensor(np.asarray(means), dtype=dt, device=dev)
        return f

    cache = _Cache(make)
    dim = factors.dim
    scale = 1.0 / dim if per_unit else 1.0
    log_det = factors.log_det_cov + dim * math.log(cov_scale)
    if dof is None:
        const = log_det + dim * math.log(2 * math.pi)
    else:
        nu = dof * dim
        const = (  # 2 x the log normalizer of the multivariate t
            2 * (math.lgamma(nu / 2) - math.lgamma((nu + dim) / 2))
            + dim * math.log(nu * math.pi)
            + log_det
        )

    def fn(acts: Acts) -> torch.Tensor:
        z = reduce_torch(acts[layer], reduction)
        _check_dim(layer, z, dim)
        d2 = squared_mahalanobis_torch(z, cache.get(z)) / cov_scale
        if dof is not None:
            d2 = (nu + dim) * torch.log1p(d2 / nu)
        return scale * 0.5 * (d2 + const)

    return Objective(fn, {layer}, "")


@objective_factory
def mixture_prior(
    layer: str,
    components: Sequence[tuple[float, QuadraticFactors]],
    basis_mean: np.ndarray,
    basis: np.ndarray,
    reduction: str | Reduction = "full",
    *,
    per_unit: bool = True,
) -> Objective:
    """Negative log-likelihood under a Gaussian mixture in a reduced basis.

    ``-logsumexp_k(log w_k + log N(z; k))`` with ``z = (x - basis_mean) @ basis``,
    divided by the reduced dimension when ``per_unit``.
    """
    r = basis.shape[1]

    def make(dev: torch.device, dt: torch.dtype) -> dict[str, Any]:
        return {
            "bm": torch.as_tensor(basis_mean, dtype=dt, device=dev),
            "b": torch.as_tensor(basis, dtype=dt, device=dev),
            "f": [_factors_torch(f, dev, dt) for _, f in components],
            "c": torch.tensor(
                [
                    math.log(w) - 0.5 * (f.log_det_cov + r * math.log(2 * math.pi))
                    for w, f in components
                ],
                dtype=dt,
                device=dev,
            ),
        }

    cache = _Cache(make)
    scale = 1.0 / r if per_unit else 1.0

    def fn(acts: Acts) -> torch.Tensor:
        x = reduce_torch(acts[layer], reduction)
        _check_dim(layer, x, basis.shape[0])
        t = cache.get(x)
        z = (x - t["bm"]) @ t["b"]
        d2 = torch.stack([squared_mahalanobis_torch(z, f) for f in t["f"]], dim=1)
        return -scale * torch.logsumexp(t["c"] - 0.5 * d2, dim=1)

    return Objective(fn, {layer}, "")


@objective_factory
def match_activations(
    layer: str,
    target: np.ndarray | torch.Tensor,
    reduction: str | Reduction = "full",
    scale: np.ndarray | None = None,
    *,
    robust: bool = False,
) -> Objective:
    """Mean squared difference to target activations (N, D), in units of ``scale``.

    Feature inversion: with ``scale`` the class's per-unit standard deviation the
    loss is the mean squared z-distance, comparable across layers. ``robust`` takes
    ``log(1 + msd)``: the same near the target, with a gradient that falls as
    ``1 / msd`` far from it, so a layer the image is still far from does not drown
    the others (the Student-t of :func:`gaussian_prior`'s ``dof``, per layer).
    """
    tgt = np.asarray(target.detach().cpu() if isinstance(target, torch.Tensor) else target)
    inv = np.ones(tgt.shape[-1]) if scale is None else 1.0 / np.maximum(np.asarray(scale), 1e-8)
    cache = _Cache(
        lambda dev, dt: (
            torch.as_tensor(tgt, dtype=dt, device=dev),
            torch.as_tensor(inv, dtype=dt, device=dev),
        )
    )

    def fn(acts: Acts) -> torch.Tensor:
        z = reduce_torch(acts[layer], reduction)
        _check_dim(layer, z, tgt.shape[-1])
        t, w = cache.get(z)
        msd = ((z - t) * w).pow(2).mean(1)
        return torch.log1p(msd) if robust else msd

    return Objective(fn, {layer}, "")


@objective_factory
def outlier_suppression(
    layer: str,
    mean: np.ndarray,
    std: np.ndarray,
    select: Callable[[np.ndarray], np.ndarray],
    reduction: str | Reduction = "full",
    *,
    every: int = 10,
) -> Objective:
    """Descend on the units whose activations are outliers for the class (the seed's method).

    Every ``every`` steps ``select`` gets the layer's detached reduced activations
    (N, D) as float64 and returns a boolean mask (N, D) of outlying units (e.g.
    ``|z| > 3`` under the fitted model); between refreshes the loss is the sum of
    those units' squared z-scores ``((x - mean) / std)^2 / 2``, which pushes each
    back toward the class mean.
    """
    cache = _Cache(
        lambda dev, dt: (
            torch.as_tensor(mean, dtype=dt, device=dev),
            torch.as_tensor(1.0 / np.maximum(std, 1e-8), dtype=dt, device=dev),
        )
    )
    state: dict[str, torch.Tensor | None] = {"mask": None}

    def refresh(acts: Acts, step: int) -> None:
        z = reduce_torch(acts[layer], reduction)
        if state["mask"] is None or state["mask"].shape != z.shape or step % every == 0:
            picked = np.asarray(select(z.detach().double().cpu().numpy()), dtype=bool)
            state["mask"] = torch.as_tensor(picked, device=z.device)

    def fn(acts: Acts) -> torch.Tensor:
        z = reduce_torch(acts[layer], reduction)
        mu, inv = cache.get(z)
        mask = state["mask"]
        if mask is None:  # not refreshed yet: nothing selected
            return z.new_zeros(z.shape[0])
        return 0.5 * (((z - mu) * inv).pow(2) * mask.to(z.dtype)).sum(1)

    return Objective(fn, {layer}, "", (refresh,))


def by_rows(objectives: Sequence[Objective], counts: Sequence[int]) -> Objective:
    """Apply ``objectives[i]`` to the next ``counts[i]`` images of the batch.

    Lets samples of several neurons (each with its own target and class
    statistics) share one batched optimization.
    """
    bounds = np.cumsum([0, *counts]).tolist()

    def rows(acts: Acts, i: int) -> dict[str, torch.Tensor]:
        return {k: v[bounds[i] : bounds[i + 1]] for k, v in acts.items()}

    def fn(acts: Acts) -> torch.Tensor:
        return torch.cat([o(rows(acts, i)) for i, o in enumerate(objectives)])

    def refresh(acts: Acts, step: int) -> None:
        for i, o in enumerate(objectives):
            o.update(rows(acts, i), step)

    layers = frozenset().union(*(o.layers for o in objectives))
    desc = " | ".join(o.description for o in objectives)
    return Objective(fn, layers, desc, (refresh,))


def _check_dim(layer: str, z: torch.Tensor, dim: int) -> None:
    if z.shape[1] != dim:
        raise ActstatsError(
            f"layer {layer}: {z.shape[1]} reduced activations but the fitted model has {dim}; "
            "check the reduction recorded in the model file"
        )
