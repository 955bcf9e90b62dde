"""``actstats top``: exemplar rankings against a brute-force argsort, crops, files, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from _store_factory import make_store
from conftest import PlantedDigits
from PIL import Image
from torch import nn
from typer.testing import CliRunner

from actstats.cli import app
from actstats.errors import ActstatsError
from actstats.io.store import open_store
from actstats.net.network import load_network
from actstats.net.receptive import ReceptiveField, input_box, receptive_field
from actstats.pipeline.top import run_top, top_images

N, NAMES = 100, ["cat", "dog"]
C, H, S = 3, 4, 2  # the grid layer: 3 channels of 4x4 kept as 2x2 cells


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray], np.ndarray]:
    """fc (7 units), a grid:2 conv, a full conv and a mean conv; some rows skipped; 7 chunks."""
    rng = np.random.default_rng(0)
    acts = {
        "fc": rng.normal(size=(N, 7)),
        "grid": rng.normal(size=(N, C * S * S)),
        "full": rng.normal(size=(N, 2 * 3 * 3)),
        "mean": rng.normal(size=(N, 5)),
    }
    ok = rng.random(N) > 0.1
    for X in acts.values():
        X[~ok] = np.nan
    labels = rng.integers(0, 2, N)
    layouts = {
        "grid": (f"grid:{S}", [C, H, H]),
        "full": ("full", [2, 3, 3]),
        "mean": ("mean", [5, 6, 6]),
    }
    root = tmp_path_factory.mktemp("toy")
    paths = [f"{NAMES[labels[i]]}/{i:03d}.png" for i in range(N)]
    for i, p in enumerate(paths):
        (root / p).parent.mkdir(exist_ok=True)
        Image.fromarray(np.full((8, 8, 3), i, np.uint8)).save(root / p)
    store = make_store(
        root / "s.zarr", acts, labels, NAMES, ok=ok, layouts=layouts, paths=paths, chunk_size=16
    )
    return store, {**acts, "ok": ok, "labels": labels}, root


def _naive_unit(acts: dict[str, np.ndarray], neuron: str) -> np.ndarray:
    """The unit's value per row, by reshaping each layer to its own layout."""
    layer, _, unit = neuron.partition(":")
    index, _, pos = unit.partition("@")
    c = int(index)
    if layer == "fc":
        return acts["fc"][:, c]
    if layer == "mean":
        return acts["mean"][:, c]
    grid = acts[layer].reshape(N, -1, *(2 * ((S,) if layer == "grid" else (3,))))
    if not pos:
        return grid[:, c].mean(axis=(1, 2))
    y, x = (int(v) for v in pos.split(","))
    if layer == "grid":  # the 2x2 cell that holds position (y, x) of the 4x4 map
        y, x = y * S // H, x * S // H
    return grid[:, c, y, x]


@pytest.mark.parametrize(
    "neuron", ["fc:3", "grid:1", "grid:2@3,0", "full:1", "full:0@2,1", "mean:4"]
)
@pytest.mark.parametrize("cls", [None, "dog"])
def test_top_matches_brute_force_argsort(toy, neuron: str, cls: str | None) -> None:
    store, acts, _ = toy
    k = 5
    v = _naive_unit(acts, neuron)
    keep = acts["ok"] & ((acts["labels"] == NAMES.index(cls)) if cls else True)
    rows = np.flatnonzero(keep)
    order = rows[np.argsort(v[rows])]
    result = top_images(store, neuron, k, class_name=cls)
    assert [e.row for e in result.top] == list(order[::-1][:k])
    assert [e.row for e in result.bottom] == list(order[:k])
    assert [e.rank for e in result.top] == list(range(1, k + 1))
    np.testing.assert_allclose([e.value for e in result.top], v[order[::-1][:k]], rtol=1e-6)
    assert all(e.path.endswith(f"{e.row:03d}.png") for e in result.top + result.bottom)
    assert all(e.class_name == NAMES[acts["labels"][e.row]] for e in result.top)
    assert result.n_images == keep.sum()


def test_top_keeps_fewer_when_the_class_is_small(toy) -> None:
    store, acts, _ = toy
    result = top_images(store, "fc:0", 1000)
    assert len(result.top) == acts["ok"].sum() == result.n_images


@pytest.mark.parametrize(
    ("neuron", "kwargs", "match"),
    [
        ("mean:1@2,2", {}, r"keeps only channel means of mean; .* --reduce mean=grid:S or full"),
        ("fc:7", {}, r"index out of range; fc has 0\.\.6"),
        ("grid:0@4,0", {}, r"position out of range; valid Y 0\.\.3"),
        ("fc:1@0,0", {}, r"@Y,X needs a conv layer"),
        ("conv9:1", {}, r"no layer 'conv9'; it has fc, grid, full, mean"),
        ("fc:1", {"class_name": "cow"}, r"--class 'cow': not a class of the store"),
        ("fc:1", {"k": 0}, r"-k 0: must be >= 1"),
    ],
)
def test_top_errors_name_the_problem(toy, neuron: str, kwargs: dict, match: str) -> None:
    with pytest.raises(ActstatsError, match=match):
        top_images(toy[0], neuron, **kwargs)


def test_top_writes_grid_and_json(toy, tmp_path: Path) -> None:
    store, _, root = toy
    result = CliRunner().invoke(
        app,
        [
            "top",
            str(store),
            "--neuron",
            "fc:2",
            "-k",
            "3",
            "--root",
            str(root),
            "-o",
            str(tmp_path / "t"),
        ],
    )
    assert result.exit_code == 0, result.output
    png, record = tmp_path / "t" / "top.png", tmp_path / "t" / "top.json"
    assert f"wrote {png} and {record}" in " ".join(result.output.split())
    data = json.loads(record.read_text())
    expected = top_images(store, "fc:2", 3)
    assert [e["path"] for e in data["top"]] == [e.path for e in expected.top]
    assert [e["rank"] for e in data["bottom"]] == [1, 2, 3] and data["unreadable"] == []
    assert Image.open(png).size[0] > 300


# ------------------------------------------------------------------ receptive fields
def _gradient_box(module: nn.Module, size: int, y: int, x: int) -> tuple[int, int, int, int]:
    """Input pixels whose gradient reaches position (y, x): the receptive field, measured."""
    inp = torch.zeros(1, 3, size, size, requires_grad=True)
    module(inp)[0, :, y, x].sum().backward()
    ys, xs = np.nonzero(inp.grad[0].abs().sum(0).numpy())
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def test_receptive_field_equals_the_gradient_support() -> None:
    torch.manual_seed(0)
    chain = nn.Sequential(
        nn.Conv2d(3, 4, 5, padding=2),
        nn.AvgPool2d(2),
        nn.Conv2d(4, 4, 3, padding=1, dilation=1),
        nn.Conv2d(4, 4, 3, stride=2),
        nn.AvgPool2d(3, stride=2, padding=1),
    )
    net = load_network(chain)
    net.preprocessing = type(net.preprocessing)(resize=40, crop=40)
    field = receptive_field(net, "4")
    h = chain(torch.zeros(1, 3, 40, 40)).shape[-1]
    for y, x in [(0, 0), (1, 2), (h - 1, h - 1)]:
        assert input_box((y, y + 1, x, x + 1), (h, h), 40, field) == _gradient_box(chain, 40, y, x)


def test_receptive_field_of_vgg16_and_resnet() -> None:
    with pytest.warns(UserWarning, match="random weights"):
        vgg = load_network("vgg16", "none")
    assert receptive_field(vgg, "conv5_3") == ReceptiveField(196, 16, 7.5)  # Araujo et al.
    assert receptive_field(vgg, "pool5").size == 212
    with pytest.warns(UserWarning):
        resnet = load_network("resnet18", "none")
    assert receptive_field(resnet, "layer3") is None  # branches: not a chain
    assert input_box((1, 2, 0, 1), (4, 4), 32, None) == (0, 8, 8, 16)


# ------------------------------------------------------------------ the digits network
def test_top_of_a_conv_position_on_digits(
    planted_digits: PlantedDigits, digits_net, tmp_path
) -> None:
    """The stored value of the top image equals the network's own grid cell for that file."""
    result, _, record = run_top(planted_digits.store, "conv3_2:5@6,1", 4, tmp_path / "t")
    assert result.unit.startswith("channel 5, grid cell 1,0 of 2x2") and not result.exact
    assert result.region == (4, 8, 0, 4) and result.receptive_field
    field = receptive_field(digits_net, "conv3_2")
    assert result.box == input_box((4, 8, 0, 4), (8, 8), 32, field)
    best = result.top[0]
    inputs = digits_net.preprocessing(Image.open(planted_digits.root / best.path).convert("RGB"))
    with torch.inference_mode():
        act = digits_net.activations(inputs[None], ["conv3_2"])["conv3_2"][0, 5, 4:8, 0:4]
    assert best.value == pytest.approx(float(act.mean()), rel=1e-5)
    data = json.loads(record.read_text())
    assert data["box"] == list(result.box) and data["unreadable"] == []
    assert open_store(planted_digits.store).attrs["root"] == data["root"]
