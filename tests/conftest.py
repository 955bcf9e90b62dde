"""Session fixtures: the digits class folders and small networks trained once per run."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from actstats.demo.digits import (
    digits_judge,
    digits_vgg,
    load_digit_folder_tensors,
    train_classifier,
    write_digit_folders,
)
from actstats.net.network import Network, load_network

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def digits_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``root/<digit name>/*.png``: half of scikit-learn's digits (the fitting half)."""
    return write_digit_folders(tmp_path_factory.mktemp("digits") / "train")


@pytest.fixture(scope="session")
def digits_holdout_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The other half of the digits, never used for training or fitting."""
    return write_digit_folders(tmp_path_factory.mktemp("digits") / "holdout", split="holdout")


@pytest.fixture(scope="session")
def digits_weights(digits_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A state-dict file of :func:`digits_vgg` trained on ``digits_root`` (~10 s)."""
    inputs, labels = load_digit_folder_tensors(digits_root)
    module = digits_vgg()
    accuracy = train_classifier(module, inputs, labels, seed=0)
    assert accuracy > 0.95, f"digits network trained to only {accuracy:.2f}"
    path = tmp_path_factory.mktemp("weights") / "digits_vgg.pth"
    torch.save(module.state_dict(), path)
    return path


@pytest.fixture(scope="session")
def judge_weights(digits_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The judge network, a different architecture and seed, trained on the same digits."""
    inputs, labels = load_digit_folder_tensors(digits_root)
    module = digits_judge()
    accuracy = train_classifier(module, inputs, labels, seed=1, epochs=12)
    assert accuracy > 0.9, f"judge network trained to only {accuracy:.2f}"
    path = tmp_path_factory.mktemp("weights") / "digits_judge.pth"
    torch.save(module.state_dict(), path)
    return path


@pytest.fixture
def digits_network_args(digits_weights: Path) -> list[str]:
    """The command-line options naming the trained digits network on the CPU."""
    return [
        "--network",
        "actstats.demo.digits:digits_vgg",
        "--weights",
        str(digits_weights),
        "--device",
        "cpu",
    ]


@pytest.fixture(scope="session")
def digits_net(digits_weights: Path) -> Network:
    """The trained digits VGG as a :class:`Network` on the CPU."""
    return load_network("actstats.demo.digits:digits_vgg", str(digits_weights))


@pytest.fixture(scope="session")
def judge_net(judge_weights: Path) -> Network:
    """The trained judge as a :class:`Network` on the CPU."""
    return load_network("actstats.demo.digits:digits_judge", str(judge_weights))


@pytest.fixture(scope="session")
def fit_digits_models(
    digits_root: Path,
    digits_net: Network,
    tmp_path_factory: pytest.TempPathFactory,
):
    """Collect the digits with the trained net and fit them: ``make(layers, reduce, classes)``.

    The real collect -> fit path, a few seconds per call; each test module picks the
    layers and classes it needs (and ``fit_store`` options such as ``mixture``) and gets
    back the model directory.
    """
    from actstats.pipeline.collect import collect
    from actstats.pipeline.fit import fit_store

    def make(
        layers: list[str], reduce: dict[str, str], classes: list[str] | None = None, **fit: str
    ) -> Path:
        base = tmp_path_factory.mktemp("models")
        collect(
            digits_root,
            base / "store.zarr",
            network=digits_net,
            layers=layers,
            reduce=reduce,
            classes=classes,
        )
        fit_store(base / "store.zarr", base / "models", **fit)
        return base / "models"

    return make


@dataclass(frozen=True)
class PlantedDigits:
    """Class folders ``zero`` and ``one`` with four held-out ``zero``s planted into ``one``."""

    root: Path
    store: Path
    models: Path
    planted: list[str]


#: Layers of the planted store: a conv grid (for positions), an fc layer and the logits.
PLANTED_LAYERS = ["conv3_2", "fc7", "fc8"]


@pytest.fixture(scope="session")
def planted_digits(
    digits_root: Path,
    digits_holdout_root: Path,
    digits_net: Network,
    tmp_path_factory: pytest.TempPathFactory,
) -> PlantedDigits:
    """Collect and fit a store whose ``one`` folder hides four zeros (mislabelled images).

    Zeros among ones: the digits hold genuinely odd zeros and sevens of their own
    (a narrow smudged zero ranks above planted sevens), so the planted class is one
    the real members cannot be mistaken for.
    """
    from actstats.pipeline.collect import collect
    from actstats.pipeline.fit import fit_store

    base = tmp_path_factory.mktemp("planted")
    root = base / "images"
    for cls in ("zero", "one"):
        shutil.copytree(digits_root / cls, root / cls)
    planted = []
    for k, src in enumerate(sorted((digits_holdout_root / "zero").glob("*.png"))[:4]):
        name = f"planted_zero_{k}.png"
        shutil.copy(src, root / "one" / name)
        planted.append(f"one/{name}")
    collect(
        root,
        base / "store.zarr",
        network=digits_net,
        layers=PLANTED_LAYERS,
        reduce={"conv3_2": "grid:2"},
    )
    fit_store(base / "store.zarr", base / "models")
    return PlantedDigits(root, base / "store.zarr", base / "models", planted)
