"""Train the DGN-AM decoder: Dosovitskiy & Brox's pixel, feature and adversarial losses.

For a batch of real images ``x`` with codes ``h = E_L(x)`` (the store's
activations of layer ``L``), the generator ``G`` minimizes::

    pixel_weight       * mean (G(h) - x)^2                       (pixels in [0, 1])
  + feature_weight     * sum_l mean (E_l(G(h)) - E_l(x))^2 / mean E_l(x)^2
  + adversarial_weight * BCE(D(G(h)), real)

over the encoder's layers ``l`` (``feature_layers``, default the code layer
itself: the decoded image must re-encode to its code). The feature term is
divided by the real activations' mean square so layers of any scale weigh
alike; the pixel term's default weight of 10 offsets its smaller scale (pixel
variance ~0.1 in ``[0, 1]`` units). With the feature term alone, short runs on
the digits decoded images whose fc6 matched but whose contrast was inverted.
With ``adversarial_weight > 0`` a :class:`Discriminator` is trained alongside
on real versus decoded images (non-saturating GAN loss).

Tensors in, tensors out: the caller supplies batches through a function and
saves checkpoints from the ``on_epoch`` callback (:meth:`GeneratorTrainer.state`
is a flat dict of tensors, so a checkpoint is a safetensors file). Training is
deterministic for a seed on the CPU, and a run resumed from a checkpoint at an
epoch boundary gives the same weights as an uninterrupted one: the shuffle of
epoch ``e`` is drawn from ``seed + e`` alone.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F  # noqa: N812

from actstats.errors import ActstatsError
from actstats.net.network import Network
from actstats.synth.generator import Discriminator, GeneratorArch, UpConvGenerator

__all__ = ["BatchFn", "GeneratorTrainer", "GeneratorTrainingConfig", "Progress"]

#: ``batch(rows) -> (codes (n, D), encoder inputs (n, 3, S, S))`` for row indices of the data.
BatchFn = Callable[[np.ndarray], tuple[torch.Tensor, torch.Tensor]]
#: ``progress(step, total_steps, loss)`` after each batch.
Progress = Callable[[int, int, float], None]


@dataclass(frozen=True)
class GeneratorTrainingConfig:
    """Hyper-parameters of :class:`GeneratorTrainer` (``epochs`` may grow on resume)."""

    layer: str
    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-3
    pixel_weight: float = 10.0
    feature_weight: float = 1.0
    feature_layers: tuple[str, ...] | None = None
    adversarial_weight: float = 0.0
    width: int = 32
    hidden: int = 256
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ActstatsError(f"--epochs {self.epochs} / --batch-size {self.batch_size}: >= 1")
        weights = (self.pixel_weight, self.feature_weight, self.adversarial_weight)
        if min(weights) < 0 or not self.pixel_weight + self.feature_weight > 0:
            raise ActstatsError(
                "generator loss weights: use >= 0, with pixel or feature weight > 0"
            )

    @property
    def comparator_layers(self) -> tuple[str, ...]:
        """The encoder layers of the feature loss."""
        return self.feature_layers or (self.layer,)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (manifest and checkpoint)."""
        data = asdict(self)
        data["feature_layers"] = list(self.comparator_layers)
        return data

    def resume_key(self) -> dict[str, Any]:
        """What a checkpoint must share with this run to continue it (all but ``epochs``)."""
        return {k: v for k, v in self.to_dict().items() if k != "epochs"}


class GeneratorTrainer:
    """Trains :class:`UpConvGenerator` on ``n`` (code, image) pairs; see the module docstring."""

    def __init__(
        self,
        encoder: Network,
        batch: BatchFn,
        n: int,
        code_mean: np.ndarray,
        code_std: np.ndarray,
        config: GeneratorTrainingConfig,
    ) -> None:
        if n < 1:
            raise ActstatsError("train-generator: no usable images in the store")
        self.encoder, self.batch, self.n, self.config = encoder, batch, n, config
        self.device = encoder.device
        arch = GeneratorArch(
            code_dim=len(code_mean),
            image_size=encoder.preprocessing.crop,
            width=config.width,
            hidden=config.hidden,
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            self.generator = UpConvGenerator(arch)
            self.discriminator = (
                Discriminator(arch.image_size, config.width) if config.adversarial_weight else None
            )
        self.generator.set_code_statistics(torch.as_tensor(code_mean), torch.as_tensor(code_std))
        self.generator.to(self.device)
        self.opt_g = torch.optim.Adam(self.generator.parameters(), lr=config.lr, betas=(0.9, 0.999))
        self.opt_d = None
        if self.discriminator is not None:
            self.discriminator.to(self.device)
            self.opt_d = torch.optim.Adam(
                self.discriminator.parameters(), lr=config.lr, betas=(0.5, 0.999)
            )
        self.epoch = 0
        self.history: list[dict[str, float]] = []
        self.seconds = 0.0

    # ------------------------------------------------------------------ losses
    def losses(self, codes: torch.Tensor, inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every term of the generator's loss for one batch (scalars), plus ``total``."""
        pre = self.encoder.preprocessing
        real01 = pre.denormalize(inputs)
        fake01 = self.generator(codes)
        layers = list(self.config.comparator_layers)
        with torch.no_grad():
            real_acts = self.encoder.activations(inputs, layers)
        fake_acts = self.encoder.activations(pre.normalize(fake01), layers)
        terms = {"pixel": F.mse_loss(fake01, real01)}
        terms["feature"] = sum(
            F.mse_loss(fake_acts[ly], real_acts[ly]) / real_acts[ly].pow(2).mean().clamp_min(1e-8)
            for ly in layers
        )
        total = self.config.pixel_weight * terms["pixel"]
        total = total + self.config.feature_weight * terms["feature"]
        if self.discriminator is not None:
            logits = self.discriminator(fake01)
            terms["adversarial"] = F.binary_cross_entropy_with_logits(
                logits, torch.ones_like(logits)
            )
            total = total + self.config.adversarial_weight * terms["adversarial"]
        terms["total"] = total
        terms["_fake"] = fake01
        terms["_real"] = real01
        return terms

    def _discriminator_step(self, real01: torch.Tensor, fake01: torch.Tensor) -> float:
        assert self.discriminator is not None and self.opt_d is not None
        self.opt_d.zero_grad(set_to_none=True)
        real = self.discriminator(real01)
        fake = self.discriminator(fake01.detach())
        loss = F.binary_cross_entropy_with_logits(
            real, torch.ones_like(real)
        ) + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake))
        loss.backward()
        self.opt_d.step()
        return float(loss.detach())

    # ------------------------------------------------------------------ loop
    def train(
        self,
        *,
        progress: Progress | None = None,
        on_epoch: Callable[[GeneratorTrainer], None] | None = None,
    ) -> list[dict[str, float]]:
        """Run epochs ``self.epoch + 1 .. config.epochs``; returns the per-epoch mean losses."""
        bs = self.config.batch_size
        per_epoch = -(-self.n // bs)
        total = per_epoch * self.config.epochs
        self.generator.train()
        while self.epoch < self.config.epochs:
            start = time.perf_counter()
            order = np.random.RandomState(self.config.seed + self.epoch).permutation(self.n)
            sums: dict[str, float] = {}
            for b in range(per_epoch):
                rows = order[b * bs : (b + 1) * bs]
                codes, inputs = self.batch(rows)
                terms = self.losses(codes.to(self.device), inputs.to(self.device))
                self.opt_g.zero_grad(set_to_none=True)
                terms["total"].backward()
                self.opt_g.step()
                if self.discriminator is not None:
                    sums["discriminator"] = sums.get("discriminator", 0.0) + len(
                        rows
                    ) * self._discriminator_step(terms["_real"], terms["_fake"])
                for key, value in terms.items():
                    if not key.startswith("_"):
                        sums[key] = sums.get(key, 0.0) + len(rows) * float(value.detach())
                if progress is not None:
                    progress(self.epoch * per_epoch + b + 1, total, float(terms["total"].detach()))
            self.epoch += 1
            self.seconds += time.perf_counter() - start
            self.history.append({k: v / self.n for k, v in sums.items()})
            if on_epoch is not None:
                on_epoch(self)
        self.generator.eval()
        return self.history

    # ------------------------------------------------------------------ state
    def state(self) -> dict[str, torch.Tensor]:
        """Everything a resumed run needs, as named CPU tensors (a safetensors checkpoint)."""
        out = {f"g.{k}": v for k, v in self.generator.state_dict().items()}
        out |= _optimizer_tensors("opt_g", self.opt_g)
        if self.discriminator is not None and self.opt_d is not None:
            out |= {f"d.{k}": v for k, v in self.discriminator.state_dict().items()}
            out |= _optimizer_tensors("opt_d", self.opt_d)
        return {k: v.detach().cpu().contiguous() for k, v in out.items()}

    def load_state(
        self, tensors: dict[str, torch.Tensor], epoch: int, history: list[dict[str, float]]
    ) -> None:
        """Continue from :meth:`state` saved after ``epoch`` epochs."""
        try:
            self.generator.load_state_dict(_with_prefix(tensors, "g."))
            _load_optimizer(self.opt_g, "opt_g", tensors)
            if self.discriminator is not None and self.opt_d is not None:
                self.discriminator.load_state_dict(_with_prefix(tensors, "d."))
                _load_optimizer(self.opt_d, "opt_d", tensors)
        except (RuntimeError, KeyError) as exc:
            raise ActstatsError(f"checkpoint does not fit this generator: {exc}") from None
        self.epoch, self.history = int(epoch), list(history)


def _with_prefix(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


def _optimizer_tensors(prefix: str, optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """Adam's per-parameter state as ``prefix.<param index>.<name>`` tensors."""
    out = {}
    for index, state in optimizer.state_dict()["state"].items():
        for name, value in state.items():
            out[f"{prefix}.{index}.{name}"] = torch.as_tensor(value)
    return out


def _load_optimizer(
    optimizer: torch.optim.Optimizer, prefix: str, tensors: dict[str, torch.Tensor]
) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in _with_prefix(tensors, prefix + ".").items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    current = optimizer.state_dict()
    optimizer.load_state_dict({"state": state, "param_groups": current["param_groups"]})
