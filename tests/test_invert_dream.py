"""Inversion lowers the activation error (and the prior lowers NLL); a dream raises the energy."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import actstats
import actstats.cli
from actstats.demo.digits import load_digit_folder_tensors
from actstats.errors import ActstatsError
from actstats.eval.metrics import layer_nll
from actstats.net.network import Network
from actstats.pipeline.explain import load_input
from actstats.pipeline.session import class_stats
from actstats.synth.methods.dream import DreamConfig, activation_energy, dream
from actstats.synth.methods.invert import InvertConfig, activation_error, invert
from actstats.synth.objectives import reduce_torch

LAYERS = ["conv2_1", "conv3_2", "conv4_1", "fc6", "fc8"]
REDUCE = {"conv2_1": "mean", "conv3_2": "grid:2", "conv4_1": "grid:2"}
runner = CliRunner()


@pytest.fixture(scope="module")
def models_dir(fit_digits_models) -> Path:
    """Digits three and seven, collected and fitted."""
    return fit_digits_models(LAYERS, REDUCE, ["three", "seven"])


@pytest.fixture(scope="module")
def threes(digits_root: Path) -> torch.Tensor:
    x, y = load_digit_folder_tensors(digits_root)
    return x[y == 3][:2]


def test_inversion_reduces_error_and_prior_lowers_nll(
    models_dir: Path, digits_net: Network, threes: torch.Tensor
) -> None:
    stats = class_stats(actstats.load(models_dir), "three")
    with torch.inference_mode():
        target = digits_net.activations(threes, ["conv4_1"])["conv4_1"]
    config = InvertConfig(steps=60)
    plain = invert(digits_net, threes, "conv4_1", config=config)
    prior = invert(digits_net, threes, "conv4_1", stats=stats, config=config)
    start = activation_error(digits_net, torch.zeros_like(threes), "conv4_1", target)
    for r in (plain, prior):
        end = activation_error(digits_net, r.images, "conv4_1", target)
        assert (end < 0.2 * start).all(), (start, end)
    assert prior.prior_layers == ["conv2_1", "conv3_2", "conv4_1"]

    def nll(images: torch.Tensor) -> float:
        with torch.inference_mode():
            acts = digits_net.activations(images, prior.prior_layers)
        return float(
            np.mean(
                [
                    layer_nll(
                        stats.models[ly],
                        reduce_torch(acts[ly], REDUCE[ly]).double().numpy(),
                        per_unit=True,
                    ).mean()
                    for ly in prior.prior_layers
                ]
            )
        )

    print("NLL/unit without prior", nll(plain.images), "with prior", nll(prior.images))
    assert nll(prior.images) < nll(plain.images)


def test_dream_raises_energy(models_dir: Path, digits_net: Network, threes: torch.Tensor) -> None:
    stats = class_stats(actstats.load(models_dir), "three")
    before = activation_energy(digits_net, threes, "conv3_2")
    for s in (None, stats):
        out = dream(digits_net, threes, "conv3_2", stats=s, config=DreamConfig(steps=8))
        after = activation_energy(digits_net, out.images, "conv3_2")
        assert (after > 1.5 * before).all(), (before, after)
        assert out.energy_history.shape == (24, 2)
    with pytest.raises(ActstatsError, match="octaves"):
        dream(digits_net, threes, "conv3_2", config=DreamConfig(octaves=12))
    with pytest.raises(ActstatsError, match="unknown layer"):
        invert(digits_net, threes, "conv9_9")


def _acts(net: Network, png: Path, layer: str = "conv3_2") -> np.ndarray:
    """A written PNG's activations at ``layer``, flattened (the pixels as a person has them)."""
    with torch.inference_mode():
        x = load_input(net, png).to(net.device)
        return net.activations(x, [layer])[layer].flatten().double().cpu().numpy()


def test_cli_invert_and_dream(
    models_dir: Path, digits_root: Path, digits_net: Network, tmp_path: Path
) -> None:
    image = str(sorted((digits_root / "seven").glob("*.png"))[0])
    common = ["--fitted", str(models_dir), "--network", "actstats.demo.digits:digits_vgg"]
    common += ["--device", "cpu", "--steps", "4"]
    r = runner.invoke(
        actstats.cli.app,
        [
            "invert",
            image,
            "--layer",
            "conv3_2",
            *common,
            "--steps",
            "40",
            "-o",
            str(tmp_path / "inv"),
        ],
    )
    assert r.exit_code == 0, r.output
    assert {p.name for p in (tmp_path / "inv").iterdir()} >= {
        "input.png",
        "inverted.png",
        "inverted_prior.png",
        "invert.json",
    }
    # What the PNGs show: their conv3_2 activations, recomputed here with numpy, are
    # closer to the input's than the blank start image's (error 1 by definition) and
    # agree with the error the command reported (up to uint8 rounding).
    record = json.loads((tmp_path / "inv" / "invert.json").read_text())
    target = _acts(digits_net, tmp_path / "inv" / "input.png")
    for name in ("inverted", "inverted_prior"):
        got = _acts(digits_net, tmp_path / "inv" / f"{name}.png")
        error = float(np.sum((got - target) ** 2) / np.sum(target**2))
        assert error < 0.9, (name, error)
        assert error == pytest.approx(record[name]["relative_error"], abs=0.05), name
    assert record["inverted_prior"]["class"] == "seven"  # the predicted class's prior
    r = runner.invoke(
        actstats.cli.app,
        [
            "dream",
            image,
            "--layer",
            "conv3_2",
            "--octaves",
            "2",
            *common,
            "-o",
            str(tmp_path / "dream"),
        ],
    )
    assert r.exit_code == 0, r.output
    assert (tmp_path / "dream" / "dream_prior.png").is_file()
    # The dreamed PNGs excite conv3_2 more than the input does (mean squared activation,
    # recomputed from the files), as dream.json reports.
    record = json.loads((tmp_path / "dream" / "dream.json").read_text())
    before = float(np.mean(_acts(digits_net, tmp_path / "dream" / "input.png") ** 2))
    assert before == pytest.approx(record["energy_before"], rel=0.05)
    for name in ("dream", "dream_prior"):
        after = float(np.mean(_acts(digits_net, tmp_path / "dream" / f"{name}.png") ** 2))
        assert after > 1.2 * before, (name, before, after)
        assert after == pytest.approx(record[name]["energy"], rel=0.1), name
    r = runner.invoke(
        actstats.cli.app,
        [
            "invert",
            image,
            "--layer",
            "conv3_2",
            *common,
            "--class",
            "nine",
            "-o",
            str(tmp_path / "x"),
        ],
    )
    assert r.exit_code == 1 and "--class 'nine'" in r.output
