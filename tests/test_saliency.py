"""Simonyan saliency on the digits network: it sits on the strokes more than on the background."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage
from typer.testing import CliRunner

import actstats.cli
from actstats.demo.digits import DIGIT_NAMES
from actstats.errors import ActstatsError
from actstats.explain.saliency import clip_percentile, saliency_map
from actstats.net.names import parse_neuron
from actstats.net.network import Network
from actstats.pipeline.explain import load_input

runner = CliRunner()


def _images(root: Path, network: Network) -> list[tuple[torch.Tensor, int]]:
    return [
        (load_input(network, sorted((root / name).glob("*.png"))[0]), label)
        for label, name in enumerate(DIGIT_NAMES)
    ]


def _ink(network: Network, x: torch.Tensor) -> np.ndarray:
    """Strokes (grey > 0.1) and their 2-px rim: the upsampled 8x8 digits have soft edges."""
    gray = network.preprocessing.to_uint8(x)[0].mean(-1) / 255.0
    return ndimage.binary_dilation(gray > 0.1, iterations=2)


def test_saliency_concentrates_on_strokes(digits_root: Path, digits_net: Network) -> None:
    ratios = []
    for x, label in _images(digits_root, digits_net):
        neuron = digits_net.resolve_neuron(parse_neuron(f"fc8:{label}"))
        sal = saliency_map(digits_net, x, neuron)[0].numpy()
        assert sal.shape == (32, 32) and (sal >= 0).all()
        ink = _ink(digits_net, x)
        ratios.append(sal[ink].mean() / sal[~ink].mean())
    print("saliency in/out ratios", np.round(ratios, 2), "mean", np.mean(ratios))
    assert np.mean(ratios) > 1.2
    assert np.median(ratios) > 1.0


def test_smoothgrad_is_seeded_and_differs(digits_root: Path, digits_net: Network) -> None:
    x, label = _images(digits_root, digits_net)[3]
    neuron = digits_net.resolve_neuron(parse_neuron(f"fc8:{label}"))
    plain = saliency_map(digits_net, x, neuron)
    a = saliency_map(digits_net, x, neuron, smoothgrad=4, seed=1)
    b = saliency_map(digits_net, x, neuron, smoothgrad=4, seed=1)
    assert torch.equal(a, b) and not torch.allclose(a, plain)


def test_input_gradient_is_relu_of_input_times_gradient(
    digits_root: Path, digits_net: Network
) -> None:
    """``kind="input-gradient"`` is relu(sum_c x_c dS/dx_c) by a direct autograd call on
    the module, a map of its own (not |gradient| rescaled)."""
    for x, label in _images(digits_root, digits_net)[:4]:
        neuron = digits_net.resolve_neuron(parse_neuron(f"fc8:{label}"))
        got = saliency_map(digits_net, x, neuron, kind="input-gradient")[0]
        leaf = x.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(digits_net.module(leaf)[0, label], leaf)
        torch.testing.assert_close(got, torch.relu((grad * x).sum(1))[0], rtol=1e-4, atol=1e-7)
        plain = saliency_map(digits_net, x, neuron)[0]
        assert (got == 0).any() and np.corrcoef(got.flatten(), plain.flatten())[0, 1] < 0.99


def test_saliency_errors(digits_net: Network) -> None:
    neuron = digits_net.resolve_neuron(parse_neuron("fc8:1"))
    with pytest.raises(ActstatsError, match="smoothgrad"):
        saliency_map(digits_net, torch.zeros(1, 3, 32, 32), neuron, smoothgrad=-1)
    with pytest.raises(ActstatsError, match=r"expected \(N, 3, H, W\)"):
        saliency_map(digits_net, torch.zeros(3, 32, 32), neuron)
    with pytest.raises(ActstatsError, match="--kind 'hessian': use one of gradient, input-grad"):
        saliency_map(digits_net, torch.zeros(1, 3, 32, 32), neuron, kind="hessian")


def test_cli_saliency(digits_root: Path, digits_network_args: list[str], tmp_path: Path) -> None:
    image = sorted((digits_root / "seven").glob("*.png"))[0]
    args = [
        "saliency",
        str(image),
        "--neuron",
        "fc8:7",
        *digits_network_args,
        "-o",
        str(tmp_path / "s.png"),
    ]
    result = runner.invoke(actstats.cli.app, args)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "s.png").is_file() and np.load(tmp_path / "s.npy").shape == (32, 32)
    bad = runner.invoke(actstats.cli.app, [*args[:2], "--neuron", "fc8:99", *args[4:]])
    assert bad.exit_code == 1 and "out of range" in bad.output
    missing = runner.invoke(
        actstats.cli.app,
        ["saliency", str(image), "--neuron", "fc8:7", "-o", str(tmp_path / "t.png")],
    )
    assert missing.exit_code == 1 and "--model" in missing.output


def test_clip_percentile_scales_by_the_percentile() -> None:
    m = np.random.default_rng(0).exponential(size=(16, 16)) ** 3  # heavy-tailed, as gradients
    heat = clip_percentile(m, 99)
    p99 = np.percentile(m, 99)
    np.testing.assert_allclose(heat, np.minimum(m / p99, 1.0))
    assert (heat == 1.0).sum() == pytest.approx(0.01 * m.size, abs=2)
    sparse = np.zeros((10, 10))
    sparse[0, 0] = 5.0  # zero at the 99th percentile: fall back to the maximum
    assert clip_percentile(sparse)[0, 0] == 1.0 and clip_percentile(np.zeros(4)).max() == 0
    with pytest.raises(ActstatsError, match="percentile 0"):
        clip_percentile(m, 0)


def test_cli_saliency_names_the_files_it_wrote(
    digits_root: Path, digits_network_args: list[str], tmp_path: Path
) -> None:
    image = sorted((digits_root / "seven").glob("*.png"))[0]
    base = ["saliency", str(image), "--neuron", "fc8:7", *digits_network_args]
    result = runner.invoke(actstats.cli.app, [*base, "-o", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    png, npy = tmp_path / "out.png", tmp_path / "out.npy"
    assert f"wrote {png} (image | heat map) and {npy}" in " ".join(result.output.split())
    two = Image.open(png).size
    result = runner.invoke(actstats.cli.app, [*base, "--overlay", "-o", str(tmp_path / "o.png")])
    assert result.exit_code == 0, result.output
    assert Image.open(tmp_path / "o.png").size[0] > 1.4 * two[0]  # a third panel
