"""The collect pipeline end to end: store contents equal a direct forward pass."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
import zarr
from PIL import Image
from typer.testing import CliRunner

import actstats.cli
from actstats.demo.digits import write_digit_folders
from actstats.errors import ActstatsError
from actstats.io.data import discover, load_image
from actstats.net.network import Network, load_network
from actstats.net.preprocessing import Preprocessing
from actstats.net.reduce import parse_reduction
from actstats.pipeline.collect import collect

runner = CliRunner()


@pytest.fixture(scope="module")
def digits_net() -> Network:
    """The digits VGG with its factory's seeded weights: instant, and as good as trained
    ones for checking that the store holds what the network computes."""
    return load_network("actstats.demo.digits:digits_vgg")


@pytest.fixture(scope="module")
def digits_weights(digits_net: Network, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Those weights as a .pth file, for the CLI's --weights PATH."""
    path = tmp_path_factory.mktemp("weights") / "digits_vgg.pth"
    torch.save(digits_net.module.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def small_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three digit classes, 12 images each (a few chunks at chunk_size 8)."""
    return write_digit_folders(
        tmp_path_factory.mktemp("small"), per_class=12, classes=("one", "three", "zero")
    )


def _direct(net: Network, root: Path, layers: list[dict]) -> dict[str, np.ndarray]:
    """The reference: every image through the network one batch at a time, no dask."""
    ds = discover(root)
    x = torch.stack([net.preprocessing(load_image(ds.absolute(i))) for i in range(len(ds.paths))])
    with torch.inference_mode():
        acts = net.activations(x.to(net.device), [e["name"] for e in layers])
    return {e["name"]: parse_reduction(e["reduce"])(acts[e["name"]]).numpy() for e in layers}


def test_digits_store_equals_direct_forward(
    digits_net: Network, small_root: Path, tmp_path: Path
) -> None:
    summary = collect(
        small_root,
        tmp_path / "s.zarr",
        network=digits_net,
        batch_size=4,
        chunk_size=8,
        reduce={"pool3": "mean", "pool4": "grid:2"},
    )
    assert (summary.n_images, summary.n_classes, summary.skipped) == (36, 3, {})
    g = zarr.open_group(str(tmp_path / "s.zarr"), mode="r")
    attrs = g.attrs["actstats"]
    assert [e["name"] for e in attrs["layers"]] == [
        *(f"pool{i}" for i in range(1, 6)),
        "fc6",
        "fc7",
        "fc8",
    ]
    assert attrs["class_names"] == ["one", "three", "zero"] and attrs["complete"]
    assert attrs["weights_sha256"] == digits_net.weights_sha256
    assert list(g["images/label"][:]) == [0] * 12 + [1] * 12 + [2] * 12
    assert g["images/done"][:].all() and g["images/ok"][:].all()
    expected = _direct(digits_net, small_root, attrs["layers"])
    for name, ref in expected.items():
        assert g[f"acts/{name}"].chunks == (8, ref.shape[1])
        np.testing.assert_allclose(g[f"acts/{name}"][:], ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("scheduler", ["sync", "threads"])
def test_local_scheduler_names_give_the_same_store(
    digits_net: Network, small_root: Path, tmp_path: Path, scheduler: str
) -> None:
    """``--scheduler sync|threads`` run in-process (as ``fit`` accepts them), also on memory://."""
    opts = {"network": digits_net, "layers": ["conv5_1", "fc7"], "chunk_size": 8}
    collect(small_root, tmp_path / "ref.zarr", **opts)
    url = f"memory://actstats-test/sched-{scheduler}.zarr"
    collect(small_root, url, scheduler=scheduler, **opts)
    ref = zarr.open_group(str(tmp_path / "ref.zarr"), mode="r")
    got = zarr.open_group(url, mode="r")
    for name in ("conv5_1", "fc7"):
        np.testing.assert_array_equal(got[f"acts/{name}"][:], ref[f"acts/{name}"][:])
    assert got["images/done"][:].all()


def test_float16_store_and_xarray(digits_net: Network, small_root: Path, tmp_path: Path) -> None:
    collect(
        small_root,
        tmp_path / "h.zarr",
        network=digits_net,
        layers=["fc7", "conv5_1"],
        dtype="float16",
    )
    ds = xr.open_zarr(tmp_path / "h.zarr", group="acts", consolidated=False)
    assert ds["fc7"].dtype == np.float16 and ds["fc7"].dims == ("image", "fc7_unit")
    images = xr.open_zarr(tmp_path / "h.zarr", group="images", consolidated=False)
    assert (
        str(images["path"].values[0])
        == "one/" + sorted(p.name for p in (small_root / "one").iterdir())[0]
    )
    ref = _direct(
        digits_net,
        small_root,
        zarr.open_group(str(tmp_path / "h.zarr")).attrs["actstats"]["layers"],
    )
    np.testing.assert_allclose(
        ds["fc7"].values.astype(np.float32), ref["fc7"], rtol=2e-3, atol=2e-3
    )


@pytest.fixture(scope="module")
def photo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """scikit-image sample photos as two classes (one grayscale JPEG among them)."""
    import skimage.data

    root = tmp_path_factory.mktemp("photos")
    for cls, names in {
        "animals": ("cat", "chelsea", "horse"),
        "things": ("astronaut", "coffee", "rocket", "camera"),
    }.items():
        (root / cls).mkdir()
        for name in names:
            Image.fromarray(getattr(skimage.data, name)()).save(root / cls / f"{name}.jpg")
    return root


def test_resnet18_module_and_graph_node_layers(photo_root: Path, tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        net = load_network("resnet18", "none", preprocessing=Preprocessing(resize=72, crop=64))
    layers = ["fc", "layer3.1.add", "layer3.1"]  # module, FX graph node, module
    summary = collect(
        photo_root,
        tmp_path / "r.zarr",
        network=net,
        layers=layers,
        reduce={"layer3.1.add": "mean"},
        batch_size=3,
    )
    assert summary.n_images == 7
    g = zarr.open_group(str(tmp_path / "r.zarr"), mode="r")
    plan = g.attrs["actstats"]["layers"]
    assert [e["name"] for e in plan] == ["layer3.1.add", "layer3.1", "fc"]  # shallow -> deep
    assert [e["reduce"] for e in plan] == ["mean", "grid:2", "full"]
    expected = _direct(net, photo_root, plan)
    for name, ref in expected.items():
        np.testing.assert_allclose(g[f"acts/{name}"][:], ref, rtol=1e-4, atol=1e-4)


def _bad_files(root: Path) -> None:
    good = next((root / "one").glob("*.png")).read_bytes()
    (root / "one" / "empty.png").write_bytes(b"")
    (root / "one" / "notes.txt").write_text("not an image")
    (root / "one" / "trunc.png").write_bytes(good[: len(good) // 2])
    (root / "one" / "dangling.png").symlink_to(root / "nowhere.png")
    (root / "ghost").mkdir()


def test_bad_files_are_recorded_and_run_goes_on(
    digits_net: Network, small_root: Path, tmp_path: Path
) -> None:
    root = tmp_path / "data"
    shutil.copytree(small_root, root)
    _bad_files(root)
    summary = collect(root, tmp_path / "b.zarr", network=digits_net, layers=["fc8"], chunk_size=8)
    assert summary.n_images == 36
    assert summary.skipped == {
        "empty file": 1,
        "not an image": 1,
        "truncated": 1,
        "broken symlink": 1,
        "empty class folder": 1,
    }
    g = zarr.open_group(str(tmp_path / "b.zarr"), mode="r")
    bad = dict(zip(g["errors/path"][:], g["errors/reason"][:], strict=True))
    assert bad["one/notes.txt"] == "not an image" and bad["ghost/"] == "empty class folder"
    ok, paths = g["images/ok"][:], list(g["images/path"][:])
    assert not ok[paths.index("one/empty.png")] and ok.sum() == 36
    skipped = list(g["images/skipped"][:])  # written at finish: what fit's plan reads
    assert skipped and skipped == list(np.flatnonzero(~ok))
    assert np.isnan(g["acts/fc8"][paths.index("one/trunc.png")]).all()
    assert g.attrs["actstats"]["class_names"] == ["one", "three", "zero"]


def test_existing_store_is_refused_unless_overwrite(
    digits_net: Network, small_root: Path, tmp_path: Path
) -> None:
    store = tmp_path / "o.zarr"
    collect(small_root, store, network=digits_net, layers=["fc8"])
    again = collect(small_root, store, network=digits_net, layers=["fc8"])
    assert again.chunks_written == 0 and again.n_images == 36
    with pytest.raises(ActstatsError, match=r"different layers; pass --overwrite"):
        collect(small_root, store, network=digits_net, layers=["fc7"])
    with pytest.raises(ActstatsError, match=r"different file list"):
        collect(small_root, store, network=digits_net, layers=["fc8"], per_class=5)
    summary = collect(small_root, store, network=digits_net, layers=["fc7"], overwrite=True)
    assert summary.chunks_written == 1
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "thesis.tex").write_text("years of work")
    for overwrite in (False, True):  # a folder actstats did not make is never replaced
        with pytest.raises(ActstatsError, match=r"not an actstats store; refusing"):
            collect(
                small_root,
                tmp_path / "junk",
                network=digits_net,
                overwrite=overwrite,
            )
    assert (tmp_path / "junk" / "thesis.tex").read_text() == "years of work"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"layers": ["conv9_9"]}, r"unknown layer 'conv9_9'.*available: conv1_1"),
        ({"reduce": {"fc8": "mean"}}, r"fc8=mean: mean needs a spatial or token layer"),
        ({"reduce": {"fc7": "grid:0"}}, r"use full, mean, grid:S, cls, tokens:S"),
        ({"reduce": {"pool4": "grid:3"}}, r"S must be 1..2"),
        ({"reduce": {"fc5": "full"}}, r"--reduce fc5: not a collected layer"),
        ({"classes": ["eleven"]}, r"unknown class 'eleven'.*valid: one, three, zero"),
        ({"dtype": "int8"}, r"use float16 or float32"),
    ],
)
def test_user_errors(
    digits_net: Network, small_root: Path, tmp_path: Path, kwargs: dict, match: str
) -> None:
    with pytest.raises(ActstatsError, match=match):
        collect(small_root, tmp_path / "e.zarr", network=digits_net, **kwargs)


def test_missing_root(tmp_path: Path) -> None:
    with pytest.raises(ActstatsError, match=r"ROOT .*nope: no such directory"):
        collect(tmp_path / "nope", tmp_path / "s.zarr")


# ------------------------------------------------------------------------ CLI
def test_cli_collect_exit_codes(
    small_root: Path, digits_network_args: list[str], tmp_path: Path
) -> None:
    args = [
        "collect",
        str(small_root),
        "-o",
        str(tmp_path / "c.zarr"),
        "--layers",
        "fc7,fc8",
        "--reduce",
        "fc7=full",
        "--batch-size",
        "8",
        "--no-progress",
        *digits_network_args,
    ]
    result = runner.invoke(actstats.cli.app, args)
    assert result.exit_code == 0, result.output
    assert "images" in result.output and "36" in result.output
    root = tmp_path / "data"
    shutil.copytree(small_root, root)
    (root / "three" / "x.png").write_bytes(b"")
    args[1], args[3] = str(root), str(tmp_path / "d.zarr")
    result = runner.invoke(actstats.cli.app, args)
    assert result.exit_code == 2, result.output
    assert "skipped: empty file" in result.output


def test_cli_run_spec_with_flag_override(
    small_root: Path, digits_weights: Path, tmp_path: Path
) -> None:
    spec = tmp_path / "run.toml"
    spec.write_text(f"""
[collect]
root = "{small_root}"
store = "spec.zarr"
model = "actstats.demo.digits:digits_vgg"
weights = "{digits_weights}"
layers = ["fc8"]
device = "cpu"
dtype = "float16"
""")
    result = runner.invoke(
        actstats.cli.app, ["collect", str(spec), "--dtype", "float32", "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    attrs = zarr.open_group(str(tmp_path / "spec.zarr"), mode="r").attrs["actstats"]
    assert attrs["dtype"] == "float32" and [e["name"] for e in attrs["layers"]] == ["fc8"]
    spec.write_text('[collect]\nroot = "x"\nstore = "y"\nbatch_size = 0\n')
    result = runner.invoke(actstats.cli.app, ["collect", str(spec)])
    assert result.exit_code == 1
    assert "collect.batch_size: 0 is less than the minimum of 1" in result.output


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["--reduce", "fc8"], "expected LAYER=REDUCTION"),
        (["--layers", "nope"], "unknown layer 'nope'"),
        (["--classes", "one,eleven"], "unknown class 'eleven'"),
        (["--device", "tpu"], "use auto, cpu, cuda or cuda:N"),
    ],
)
def test_cli_errors_are_one_line(
    small_root: Path,
    digits_network_args: list[str],
    tmp_path: Path,
    extra: list[str],
    match: str,
) -> None:
    args = [
        "collect",
        str(small_root),
        "-o",
        str(tmp_path / "e.zarr"),
        "--no-progress",
        *digits_network_args[:4],
        *extra,
    ]
    if "--device" not in extra:
        args += ["--device", "cpu"]
    result = runner.invoke(actstats.cli.app, args)
    assert result.exit_code == 1
    assert match in result.output and "Traceback" not in result.output


def test_cli_needs_a_store(small_root: Path) -> None:
    result = runner.invoke(actstats.cli.app, ["collect", str(small_root)])
    assert result.exit_code == 1 and "no output store; pass -o STORE" in result.output


@pytest.mark.skipif(
    not (shutil.which("c++") or shutil.which("g++")), reason="inductor needs a C++ compiler"
)
def test_collect_with_compile_writes_the_same_store(
    digits_net: Network, small_root: Path, tmp_path: Path
) -> None:
    """collect --compile (inductor, the default backend) on the CPU: batches of 5 over
    chunks of 10 leave short batches, padded to the compiled shape."""
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # a fallback would warn
        collect(
            small_root,
            tmp_path / "c.zarr",
            network=digits_net,
            layers=["pool2", "pool4", "fc8"],
            reduce={"pool2": "mean", "pool4": "grid:2"},
            batch_size=5,
            chunk_size=10,
            compile=True,
        )
    # compiled, and once: the short batches were padded to the one compiled shape
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1
    g = zarr.open_group(str(tmp_path / "c.zarr"), mode="r")
    for name, ref in _direct(digits_net, small_root, g.attrs["actstats"]["layers"]).items():
        np.testing.assert_allclose(g[f"acts/{name}"][:], ref, rtol=1e-4, atol=1e-4)


def test_collect_does_not_compile_on_a_cpu_by_default(
    digits_net: Network, small_root: Path, tmp_path: Path
) -> None:
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    collect(small_root, tmp_path / "d.zarr", network=digits_net, layers=["fc8"])
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 0
