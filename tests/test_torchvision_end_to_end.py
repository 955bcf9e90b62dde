"""The ImageNet-shaped path end to end: a torchvision VGG (random weights, no download),
WordNet-id class folders of natural photos, VGG aliases, wide fc layers with N << D,
``sample --neuron fc8:207`` finding ``n02099601/`` through the shipped wnid list.

Inputs are 32x32 (a ``Preprocessing`` override) so the whole file runs in well under
a minute on two CPU cores; the layer shapes past ``avgpool`` are ImageNet's.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
from PIL import Image
from typer.testing import CliRunner

import actstats
import actstats.cli
from actstats.cli.app import app
from actstats.io.data import load_image
from actstats.net.names import imagenet_wnids, parse_neuron
from actstats.net.network import Network, load_network
from actstats.net.preprocessing import Preprocessing
from actstats.pipeline.collect import collect
from actstats.pipeline.fit import fit_store

runner = CliRunner()

MODEL = "vgg11"  # VGG16's classifier (fc6/fc7 4096-D, fc8 1000-D), a cheaper trunk
SIZE = 32
# WordNet id -> the scikit-image photos its crops come from; output 207 / 281 / 967
CLASSES = {
    "n02099601": ("astronaut", "rocket"),  # golden retriever
    "n02123045": ("chelsea",),  # tabby
    "n07920052": ("coffee",),  # espresso
}
PER_CLASS = 6
LAYERS = ["conv3_1", "conv4_1", "fc6", "fc7", "fc8"]
REDUCE = {"conv3_1": "grid:2", "conv4_1": "mean"}


def _net(weights: str = "none") -> Network:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "random weights" is the point here
        net = load_network(MODEL, weights, device="cpu")
    p = net.preprocessing
    net.preprocessing = Preprocessing(
        resize=round(SIZE * p.resize / p.crop), crop=SIZE, mean=p.mean, std=p.std
    )
    return net


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``root/<wnid>/*.JPEG`` random crops of scikit-image photos, plus a corrupt file."""
    import skimage.data

    root = tmp_path_factory.mktemp("imagenet") / "train"
    rng = np.random.default_rng(0)
    for wnid, names in CLASSES.items():
        folder = root / wnid
        folder.mkdir(parents=True)
        for i in range(PER_CLASS):
            photo = getattr(skimage.data, names[i % len(names)])()
            if photo.ndim == 2:
                photo = np.stack([photo] * 3, axis=-1)
            h, w = photo.shape[:2]
            c = int(rng.integers(min(h, w) // 2, min(h, w)))
            y, x = int(rng.integers(0, h - c + 1)), int(rng.integers(0, w - c + 1))
            img = Image.fromarray(photo[y : y + c, x : x + c, :3]).resize((48, 40))
            img.save(folder / f"{wnid}_{i}.JPEG", format="JPEG", quality=90)
    (root / "n02123045" / "n02123045_broken.JPEG").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    return root


@pytest.fixture(scope="module")
def net() -> Network:
    return _net()


@pytest.fixture(scope="module")
def store(root: Path, net: Network, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("store") / "vgg.zarr"
    summary = collect(
        root,
        path,
        network=net,
        layers=LAYERS,
        reduce=REDUCE,
        batch_size=8,
        chunk_size=8,
    )
    assert summary.n_images == len(CLASSES) * PER_CLASS and summary.n_classes == 3
    assert sum(summary.skipped.values()) == 1
    assert [Path(p).name for p, _ in summary.errors] == ["n02123045_broken.JPEG"]
    return path


@pytest.fixture(scope="module")
def models_dir(store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("models") / "vgg.models"
    # cov="auto"; two of the classes (and __all__) keep the fit cheap on two cores
    fit_store(store, out, classes=["n02099601", "n02123045"], scheduler="synchronous")
    return out


def test_store_opens_with_xarray_and_equals_a_direct_forward(
    store: Path, root: Path, net: Network
) -> None:
    acts = xr.open_zarr(store, group="acts", consolidated=False)
    images = xr.open_zarr(store, group="images", consolidated=False)
    n = len(CLASSES) * PER_CLASS
    assert acts["fc7"].shape[1] == 4096 and acts["fc6"].shape[1] == 4096
    assert acts["fc8"].shape[1] == 1000
    assert acts["conv3_1"].shape[1] == 256 * 4 and acts["conv4_1"].shape[1] == 512
    ok = images["ok"].values.astype(bool)
    assert ok.sum() == n
    paths = [str(p) for p in images["path"].values]
    row = next(i for i, p in enumerate(paths) if ok[i] and p.endswith("n02099601_3.JPEG"))
    x = net.preprocessing(load_image(root / paths[row]))[None]  # paths are root-relative
    with torch.inference_mode():
        direct = net.activations(x, ["fc7"])["fc7"].numpy()[0]
    stored = acts["fc7"].values[row]
    scale = np.abs(direct).max()
    assert scale > 0
    np.testing.assert_allclose(stored, direct, atol=1e-3 * scale, rtol=1e-3)


def test_fit_wide_fc_layers_low_rank_finite(models_dir: Path, store: Path) -> None:
    models = actstats.load(models_dir)
    cm = models["n02099601"]
    acts = xr.open_zarr(store, group="acts", consolidated=False)
    ok = xr.open_zarr(store, group="images", consolidated=False)["ok"].values.astype(bool)
    for layer, dim in (("fc6", 4096), ("fc7", 4096), ("fc8", 1000)):
        g = cm[layer]
        assert g.cov_type_ == "lowrank" and 1 <= g.components_.shape[1] < PER_CLASS, layer
        assert 0.0 < g.shrinkage_ <= 1.0 and np.all(g.noise_variance_ > 0), layer
        X = acts[layer].values[ok].astype(np.float64)  # the corrupt file's row is not data
        nll = -g.score_samples(X)
        assert np.all(np.isfinite(nll)), layer
        sample = g.sample(3, random_state=0)
        sample = sample[0] if isinstance(sample, tuple) else sample
        assert sample.shape == (3, dim) and np.all(np.isfinite(sample))


def test_categories_resolve_fc8_golden_retriever(net: Network) -> None:
    assert net.categories is not None and len(net.categories) == 1000
    assert net.categories[207] == "golden retriever"
    by_name = net.resolve_neuron(parse_neuron("fc8:golden_retriever"))
    by_index = net.resolve_neuron(parse_neuron("fc8:207"))
    assert (by_name.layer, by_name.index) == (by_index.layer, by_index.index) == ("fc8", 207)
    assert imagenet_wnids()[207] == "n02099601"


@pytest.mark.filterwarnings("ignore:--weights none")
@pytest.mark.parametrize(
    ("method", "neuron"), [("suppress", "fc8:207"), ("ancestral", "fc8:golden_retriever")]
)
def test_sample_cli_finds_wnid_folder(
    models_dir: Path, tmp_path: Path, method: str, neuron: str
) -> None:
    """No --class: output 207 (by index or by torchvision's category name) finds the
    ``n02099601`` folder's statistics through the shipped wnid list."""
    out = tmp_path / method
    args = ["sample", str(models_dir), "--neuron", neuron, "--method", method]
    args += ["-n", "2", "--steps", "5", "--seed", "0", "--device", "cpu", "-o", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    (folder,) = out.iterdir()
    assert sorted(p.name for p in folder.glob("*.png")) == [
        "grid.png",
        "sample_000.png",
        "sample_001.png",
    ]
    assert Image.open(folder / "sample_000.png").size == (SIZE, SIZE)
    summary = json.loads((folder / "samples.json").read_text())
    assert summary["class"] == "n02099601" and summary["method"] == method
    assert len(summary["samples"]) == 2
    for rec in summary["samples"]:
        assert rec["class"] == "n02099601" and "207" in rec["neuron"]
        assert rec["steps"] == 5 and len(rec["loss_history"]) == 5
        assert 0.0 <= rec["target_probability"] <= 1.0
        assert rec["nll"] and all(np.isfinite(v) for v in rec["nll"].values())
        assert all(np.isfinite(v) for v in rec["nll_per_unit"].values())
        if method == "ancestral":
            assert rec["chain_match"] and all(np.isfinite(v) for v in rec["chain_match"].values())


@pytest.mark.filterwarnings("ignore:--weights none")
def test_sample_refuses_other_weights(models_dir: Path, tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(1)
            other = load_network(MODEL, "none").module  # seeded 0 inside; perturb it
            with torch.no_grad():
                other.classifier[-1].bias.add_(torch.randn(1000))
    path = tmp_path / "other.pth"
    torch.save(other.state_dict(), path)
    args = ["sample", str(models_dir), "--neuron", "fc8:207", "--method", "suppress"]
    args += ["-n", "1", "--steps", "1", "--device", "cpu", "--weights", str(path)]
    result = runner.invoke(app, [*args, "-o", str(tmp_path / "out")])
    assert result.exit_code != 0
    assert "sha256" in result.output and "differ" in result.output
    assert not (tmp_path / "out" / "fc8_207").exists()
