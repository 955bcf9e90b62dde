"""Every torchvision layout end to end on one small member per family (random weights).

For each family: ``actstats layers`` lists the layers with the layout each truly has;
``collect`` on 4 images with the default layers; every stored row equals a numpy
reduction of the layer's raw output read with its true layout (stated here, not
detected); ``fit`` within a memory budget; ``sample --steps 2`` on a channel of the
deepest spatial or token layer. The sweep over every model torchvision lists is
benchmarks/families.py (results in benchmarks/results/).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from _layout_reference import reference_row
from PIL import Image
from typer.testing import CliRunner

import actstats
from actstats.cli.app import app
from actstats.errors import ActstatsError
from actstats.io.data import load_image
from actstats.net.network import load_network
from actstats.pipeline.collect import collect
from actstats.pipeline.fit import fit_store
from actstats.pipeline.sample import run_sample

runner = CliRunner()

#: family -> {layer: true layout}: the default layers plus the inner layers that differ.
TRUE_LAYOUTS = {
    "vit": {
        "conv_proj": "NCHW",
        "encoder": "NTC:1+4x4",
        "encoder.layers.encoder_layer_0.mlp.0": "NTC:1+4x4",
        "heads": "NC",
    },
    "swin": {"features.0.0": "NCHW", "features": "NHWC", "norm": "NHWC", "head": "NC"},
    "swin_v2": {"features.1.0.mlp": "NHWC", "features": "NHWC", "norm": "NHWC", "head": "NC"},
    "maxvit": {
        "blocks.0.layers.0.layers.window_attention.mlp_layer": "NTC",
        "blocks.0.layers.0.layers.grid_attention.attn_layer": "NTC",
        "blocks.0": "NCHW",
        "blocks.1": "NCHW",
        "classifier": "NC",
    },
    "convnext": {"features.1.0.block.3": "NHWC", "features": "NCHW", "classifier": "NC"},
    "resnet18": {
        "layer1": "NCHW",
        "layer2": "NCHW",
        "layer3": "NCHW",
        "layer4": "NCHW",
        "avgpool": "NCHW",
        "fc": "NC",
    },
    "mobilenet_v3_small": {
        "features.0": "NCHW",
        "features.2.block.0": "NCHW",
        "features.4.block.0": "NCHW",
        "features.9.block.0": "NCHW",
        "features": "NCHW",
        "classifier.2": "NC",
        "classifier.3": "NC",
        "classifier": "NC",
    },
}
#: family -> the layers collected when none are named: the last three top-level children
#: that run for nets with channels-last or token layers, every stage's output for
#: channels-first nets (the tiny resnet18's layer4 is 1x1 at this crop: a pooled map).
DEFAULTS = {
    "vit": {"conv_proj", "encoder", "heads"},
    "swin": {"features", "norm", "head"},
    "swin_v2": {"features", "norm", "head"},
    "maxvit": {"blocks.0", "blocks.1", "classifier"},
    "convnext": {"features", "classifier"},
    "resnet18": {"layer1", "layer2", "layer3", "avgpool", "fc"},
    "mobilenet_v3_small": {
        "features.0",
        "features.2.block.0",
        "features.4.block.0",
        "features.9.block.0",
        "classifier.2",
        "classifier.3",
    },
}
#: the unit sampled: a channel of the deepest spatial/token default layer, at a position.
NEURONS = {
    "vit": "encoder:3@1,2",
    "swin": "norm:5",
    "swin_v2": "features:2@1,1",
    "maxvit": "blocks.1:4",
    "convnext": "features:1",
    "resnet18": "layer3:7",
    "mobilenet_v3_small": "features.9.block.0:3",
}


def _spec(family: str) -> str:
    return f"_tiny_models:{family}"


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two classes of two 40x40 images: smooth gradients plus noise."""
    root = tmp_path_factory.mktemp("families") / "train"
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:40, 0:40] / 40.0
    for c, name in enumerate(("a", "b")):
        (root / name).mkdir(parents=True)
        for i in range(2):
            base = (
                np.stack([yy, xx, (yy + xx) / 2], -1) if c == 0 else np.stack([xx, yy, 1 - xx], -1)
            )
            img = np.clip(base + 0.2 * rng.normal(size=base.shape), 0, 1)
            Image.fromarray((img * 255).astype(np.uint8)).save(root / name / f"{i}.png")
    return root


# ------------------------------------------------------------------- tests
@pytest.mark.parametrize("family", list(TRUE_LAYOUTS))
def test_layers_lists_every_layer_with_its_true_layout(family: str) -> None:
    result = runner.invoke(app, ["layers", _spec(family), "--json"])
    assert result.exit_code == 0, result.output
    records = {r["name"]: r for r in json.loads(result.output)}
    for layer, layout in TRUE_LAYOUTS[family].items():
        assert records[layer]["layout"] == layout, (layer, records[layer])
        if records[layer]["default_reduce"]:
            assert records[layer]["default_dim"] <= 16384


def _check_store(store: Path, root: Path, family: str) -> list[str]:
    attrs = zarr.open_group(str(store), mode="r").attrs["actstats"]
    group = zarr.open_group(str(store), mode="r")
    net = load_network(_spec(family), device="cpu")
    paths = [str(p) for p in group["images/path"][:]]
    x = torch.stack([net.preprocessing(load_image(root / p)) for p in paths])
    names = [e["name"] for e in attrs["layers"]]
    with torch.inference_mode():
        raw = net.activations(x, names, run_to_end=True)
    for entry in attrs["layers"]:
        name, layout = entry["name"], TRUE_LAYOUTS[family][entry["name"]]
        assert entry["layout"] == layout, entry
        stored = group[f"acts/{name}"][:]
        out = raw[name].numpy()
        want = np.stack([reference_row(out[i], layout, entry["reduce"]) for i in range(len(paths))])
        assert stored.shape == want.shape == (4, entry["dim"]), entry
        np.testing.assert_allclose(stored, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())
    return names


@pytest.mark.filterwarnings("ignore:--weights none")
@pytest.mark.parametrize("family", list(TRUE_LAYOUTS))
def test_collect_fit_sample(family: str, root: Path, tmp_path: Path) -> None:
    store = tmp_path / "acts.zarr"
    collect(root, store, network=_spec(family), device="cpu", scheduler="sync")
    names = _check_store(store, root, family)
    assert set(names) == DEFAULTS[family]

    with pytest.raises(ActstatsError, match=r"--cov full: the fit needs about .* but --memory is"):
        fit_store(store, None, cov="full", memory="16KB", scheduler="sync")
    result = fit_store(store, tmp_path / "m", memory="256MB", scheduler="sync", holdout=0.0)
    assert not result.notes  # small layers: dense moments fit
    models = actstats.load(tmp_path / "m")
    for layer in names:
        g = models["a"][layer]
        assert np.isfinite(g.score_samples(g.sample(2, random_state=0))).all()

    paths = run_sample(
        tmp_path / "m",
        [NEURONS[family]],
        "suppress",
        1,
        0,
        tmp_path / "s",
        class_name="a",
        network=_spec(family),
        device="cpu",
        steps=2,
    )
    (folder,) = paths
    summary = json.loads((folder / "samples.json").read_text())
    (rec,) = summary["samples"]
    assert rec["steps"] == 2 and np.isfinite(rec["target_score"]) and rec["nll"]


@pytest.mark.parametrize("family", ["vit", "maxvit", "convnext", "swin_v2"])
def test_inner_layers_are_stored_with_their_true_layout(
    family: str, root: Path, tmp_path: Path
) -> None:
    inner = [n for n in TRUE_LAYOUTS[family] if n not in DEFAULTS[family]]
    store = tmp_path / "inner.zarr"
    reduce = {n: "full" if TRUE_LAYOUTS[family][n] == "NC" else "mean+full" for n in inner}
    collect(
        root,
        store,
        network=_spec(family),
        layers=inner,
        reduce=reduce,
        device="cpu",
        scheduler="sync",
    )
    _check_store(store, root, family)


@pytest.mark.parametrize("family", ["vit", "swin", "maxvit"])
def test_reductions_of_each_kind_match_numpy(family: str, root: Path, tmp_path: Path) -> None:
    layer = {
        "vit": "encoder",
        "swin": "features",
        "maxvit": "blocks.0.layers.0.layers.window_attention.mlp_layer",
    }[family]
    kinds = {"vit": "cls+tokens:3+grid:3", "swin": "grid:3+mean", "maxvit": "tokens:5+mean"}[family]
    store = tmp_path / "kinds.zarr"
    collect(
        root,
        store,
        network=_spec(family),
        layers=[layer],
        reduce={layer: kinds},
        device="cpu",
        scheduler="sync",
    )
    _check_store(store, root, family)


@pytest.mark.filterwarnings("ignore:--weights none")
def test_full_tokens_warn_and_fit_within_memory(root: Path, tmp_path: Path) -> None:
    """ViT's tokens stored whole: a one-line warning with the size; fit keeps within
    --memory with a streamed low-rank model; --cov full that cannot fit is refused."""
    store, models = tmp_path / "vit.zarr", tmp_path / "vit.models"
    args = ["collect", str(root), "-o", str(store), "--network", _spec("vit"), "--device", "cpu"]
    args += ["--layers", "conv_proj,encoder,heads", "--reduce", "encoder=full"]
    args += ["--max-values", "50", "--scheduler", "sync", "--no-progress"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    warning = [line for line in result.output.splitlines() if line.startswith("warning:")]
    assert warning == [
        "warning: --reduce encoder=full: stores 272 values per image (1.1 KiB in float32), "
        "above the 50-value budget"
    ]
    attrs = zarr.open_group(str(store), mode="r").attrs["actstats"]
    assert [e["reduce"] for e in attrs["layers"]] == ["mean", "full", "full"]  # grid:2 > 200
    _check_store(store, root, "vit")

    fit = ["fit", str(store), "-o", str(models), "--scheduler", "sync"]
    refused = runner.invoke(app, [*fit, "--cov", "full", "--memory", "2MB"])
    assert refused.exit_code == 1
    assert "--cov full: the fit needs about" in refused.output and "encoder" in refused.output
    result = runner.invoke(app, [*fit, "--memory", "5MB"])
    assert result.exit_code == 0, result.output
    assert "encoder (D=272): a dense covariance needs 578.0 KiB per class" in result.output
    assert "low-rank(64) + diagonal from a 128-row sketch" in result.output
    g = actstats.load(models)["a"]["encoder"]
    assert (
        g.cov_type_ == "lowrank" and np.isfinite(g.score_samples(g.sample(3, random_state=0))).all()
    )

    out = tmp_path / "anc"
    paths = run_sample(
        models,
        ["heads:3"],
        "ancestral",
        1,
        0,
        out,
        class_name="a",
        network=_spec("vit"),
        device="cpu",
        steps=2,
    )
    rec = json.loads((paths[0] / "samples.json").read_text())["samples"][0]
    assert set(rec["chain_match"]) >= {"encoder"} and np.isfinite(rec["chain_match"]["encoder"])
