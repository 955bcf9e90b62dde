"""``actstats train-generator``: train DGN-AM's decoder from an activation store.

The store already holds what the decoder needs: the real images (``images/path``
under the data root) and the encoder's activations of the code layer for each
(``acts/<layer>``). :func:`run_train_generator` opens the store and the network
it was collected with (the encoder ``E``), streams the code layer's per-unit
mean and standard deviation (float64, merged chunk by chunk), then trains
:class:`~actstats.synth.generator_train.GeneratorTrainer` on (code, image)
batches, saving a checkpoint after every epoch; a rerun of the same command
resumes from it. The finished decoder is written by
:mod:`actstats.io.generator`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from actstats.errors import ActstatsError
from actstats.io.data import BadImageError, load_image
from actstats.io.generator import (
    clear_generator_dir,
    read_checkpoint,
    write_checkpoint,
    write_generator,
)
from actstats.io.store import ActivationStore, open_store
from actstats.net.network import Network, load_network
from actstats.net.preprocessing import Preprocessing
from actstats.stats.gaussian import merge_moments, moments_from_array
from actstats.synth.generator_train import GeneratorTrainer, GeneratorTrainingConfig, Progress
from actstats.version import __version__

__all__ = ["TrainedGenerator", "code_statistics", "run_train_generator", "store_network"]


@dataclass(frozen=True)
class TrainedGenerator:
    """Where the generator went, how its losses went (per epoch) and how long it took."""

    path: Path
    epochs: int
    history: list[dict[str, float]]
    seconds: float
    n_images: int
    resumed_from: int


def store_network(store: ActivationStore, device: str = "auto") -> Network:
    """The network a store was collected with, checked against its recorded weights."""
    attrs = store.attrs
    network = load_network(
        attrs["model"],
        attrs["weights"],
        device=device,
        preprocessing=Preprocessing.from_dict(attrs["preprocessing"]),
    )
    if attrs.get("weights_sha256") and attrs["weights_sha256"] != network.weights_sha256:
        raise ActstatsError(
            f"store {store.path}: the network's weights differ from those the store was "
            f"collected with ({attrs['model']} {attrs['weights']}); recollect or restore them"
        )
    return network


def code_statistics(store: ActivationStore, layer: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-unit mean and standard deviation (float64) of ``layer`` over the store's usable rows."""
    acts, ok, chunk = store.acts(layer), store.ok(), store.chunk_size
    total = None
    for start in range(0, acts.shape[0], chunk):
        rows = np.asarray(acts[start : start + chunk])[ok[start : start + chunk]]
        part = moments_from_array(rows, diag_only=True)
        total = part if total is None else merge_moments(total, part)
    if total is None or total.n == 0:
        raise ActstatsError(f"store {store.path}: no usable rows; run `actstats collect` first")
    return total.mean, np.sqrt(total.variances())


def _data_root(store: ActivationStore, root: str | os.PathLike | None) -> Path:
    found = root or store.attrs.get("root")
    if not found or not Path(found).is_dir():
        raise ActstatsError(
            f"store {store.path}: its images' root {found!r} is not a folder here; pass --root DIR"
        )
    return Path(found)


class _StoreBatches:
    """``batch(rows)``: the store's codes and the decoded, preprocessed images of those rows."""

    def __init__(self, store: ActivationStore, layer: str, root: Path, pre: Preprocessing):
        self.rows = np.flatnonzero(store.ok())
        self.paths = np.asarray(store.group["images/path"][:])
        self.acts, self.root, self.pre = store.acts(layer), root, pre

    def __call__(self, picked: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        rows = np.sort(self.rows[picked])
        codes = torch.as_tensor(np.asarray(self.acts.oindex[rows, :], dtype=np.float32))
        images = []
        for row in rows:
            path = self.root / str(self.paths[row])
            try:
                images.append(self.pre(load_image(path)))
            except BadImageError as exc:
                raise ActstatsError(f"{path}: {exc}; recollect the store") from None
        return codes, torch.stack(images)


def run_train_generator(
    store_path: str | os.PathLike,
    layer: str,
    output: str | os.PathLike,
    *,
    config: GeneratorTrainingConfig | None = None,
    root: str | os.PathLike | None = None,
    device: str = "auto",
    network: Network | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> TrainedGenerator:
    """Train a decoder from ``layer``'s activations to pixels and write it to ``output``.

    A rerun without ``overwrite`` resumes an unfinished run from its checkpoint
    (the options must match; ``epochs`` may grow). ``network`` skips loading the
    store's network (it must be that network).
    """
    config = config or GeneratorTrainingConfig(layer=layer)
    store = open_store(store_path)
    if layer not in store.layers:
        raise ActstatsError(
            f"--layer {layer}: not in store {store_path}; stored: {', '.join(store.layers)}"
        )
    folder = clear_generator_dir(output, overwrite=overwrite)
    encoder = network or store_network(store, device)
    batches = _StoreBatches(store, layer, _data_root(store, root), encoder.preprocessing)
    mean, std = code_statistics(store, layer)
    trainer = GeneratorTrainer(encoder, batches, len(batches.rows), mean, std, config)
    resumed = _resume(trainer, folder, config)

    def save(t: GeneratorTrainer) -> None:
        info = {
            "epoch": t.epoch,
            "resume_key": config.resume_key(),
            "history": t.history,
            "seconds": t.seconds,
        }
        write_checkpoint(folder, t.state(), info)

    history = trainer.train(progress=progress, on_epoch=save)
    reduction = next(ly["reduce"] for ly in store.attrs["layers"] if ly["name"] == layer)
    meta: dict[str, Any] = {
        "layer": layer,
        "reduction": reduction,
        "encoder": {
            "model": store.attrs["model"],
            "weights": store.attrs["weights"],
            "weights_sha256": store.attrs.get("weights_sha256"),
            "preprocessing": encoder.preprocessing.to_dict(),
        },
        "store": str(store_path),
        "n_images": trainer.n,
        "training": config.to_dict(),
        "history": history,
        "seconds": trainer.seconds,
        "actstats_version": __version__,
    }
    write_generator(folder, trainer.generator.cpu(), meta)
    return TrainedGenerator(folder, trainer.epoch, history, trainer.seconds, trainer.n, resumed)


def _resume(trainer: GeneratorTrainer, folder: Path, config: GeneratorTrainingConfig) -> int:
    """Load the checkpoint of an unfinished run; returns its epoch (0 when none)."""
    found = read_checkpoint(folder)
    if found is None:
        return 0
    tensors, info = found
    if info["resume_key"] != config.resume_key():
        raise ActstatsError(
            f"-o {folder}: holds a checkpoint trained with other options "
            f"({info['resume_key']}); rerun with those, or pass --overwrite to start over"
        )
    trainer.load_state(tensors, info["epoch"], info["history"])
    trainer.seconds = float(info["seconds"])
    return int(info["epoch"])
