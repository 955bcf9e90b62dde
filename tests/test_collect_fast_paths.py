"""collect's device fast paths, exercised on the CPU.

``decode="gpu"`` runs the tensor decoder (``torchvision.io.decode_jpeg``) on
the network's device; on a CPU network that is libjpeg-turbo, which decodes
exactly as PIL does, so the stores must agree to float tolerance. On CUDA
(nvjpeg, float resize) pixels may differ by a few levels out of 255; the
decoder is recorded in ``attrs["decode"]`` for that reason.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr
from PIL import Image

import actstats.pipeline.collect_graph as collect_graph
from actstats.errors import ActstatsError
from actstats.io.data import decode_jpegs, jpeg_bytes, load_image
from actstats.net.network import Network, load_network
from actstats.net.preprocessing import Preprocessing
from actstats.pipeline.collect import collect
from actstats.pipeline.collect_graph import geometry

#: PIL vs tensor decoding on the CPU: pixels (uint8, after resize and crop).
PIXEL_TOL_CPU = 1
#: and the activations computed from them.
ACTS_RTOL = ACTS_ATOL = 1e-4


@pytest.fixture(scope="module")
def net() -> Network:
    return load_network("actstats.demo.digits:digits_vgg")


@pytest.fixture(scope="module")
def jpeg_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two classes of photo crops as JPEG (RGB and grayscale), plus files the
    tensor decoder must hand to PIL: PNG, EXIF-rotated JPEG, CMYK JPEG, and bad
    files PIL names: truncated, empty, not an image."""
    import skimage.data

    root = tmp_path_factory.mktemp("jpegs")
    photos = [skimage.data.astronaut(), skimage.data.coffee(), skimage.data.chelsea()]
    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (root / cls).mkdir()
        for i in range(7):
            photo = photos[i % 3]
            y, x = int(rng.integers(0, 100)), int(rng.integers(0, 100))
            Image.fromarray(photo[y : y + 60, x : x + 80]).save(root / cls / f"{i}.jpg", quality=90)
    Image.fromarray(skimage.data.camera()[:50, :70]).save(root / "a" / "gray.jpg")
    Image.fromarray(photos[0][:40, :50]).save(root / "b" / "p.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90
    Image.fromarray(photos[1][:40, :64]).save(root / "b" / "rotated.jpg", exif=exif)
    Image.fromarray(photos[2][:48, :48]).convert("CMYK").save(root / "b" / "cmyk.jpg")
    good = (root / "a" / "0.jpg").read_bytes()
    (root / "a" / "trunc.jpg").write_bytes(good[: len(good) // 2])
    (root / "a" / "empty.jpg").write_bytes(b"")
    (root / "b" / "notes.jpg").write_text("not an image")
    return root


def _store(path: Path) -> zarr.Group:
    return zarr.open_group(str(path), mode="r")


def test_jpeg_bytes_routes_only_plain_jpegs(jpeg_root: Path) -> None:
    assert jpeg_bytes(jpeg_root / "a" / "0.jpg") is not None
    assert jpeg_bytes(jpeg_root / "a" / "gray.jpg") is not None
    for name in ("b/p.png", "b/rotated.jpg", "b/cmyk.jpg", "a/trunc.jpg", "a/empty.jpg"):
        assert jpeg_bytes(jpeg_root / name) is None, name
    assert jpeg_bytes(jpeg_root / "b" / "notes.jpg") is None
    assert jpeg_bytes(jpeg_root / "missing.jpg") is None


def test_tensor_decode_matches_pil_on_cpu(jpeg_root: Path) -> None:
    from torchvision.transforms.v2.functional import pil_to_tensor

    resize_crop = geometry(Preprocessing(resize=40, crop=32))
    files = [jpeg_root / "a" / f"{i}.jpg" for i in range(7)] + [jpeg_root / "a" / "gray.jpg"]
    tensors = decode_jpegs([jpeg_bytes(f) for f in files], "cpu")
    for f, t in zip(files, tensors, strict=True):
        ref = resize_crop(pil_to_tensor(load_image(f)))
        got = resize_crop(t)
        assert got.shape == ref.shape == (3, 32, 32)
        assert (got.int() - ref.int()).abs().max() <= PIXEL_TOL_CPU


@pytest.mark.parametrize("decode", ["gpu", "mixed"])
def test_tensor_decode_store_equals_pil_store(
    net: Network, jpeg_root: Path, tmp_path: Path, decode: str
) -> None:
    kwargs = {"network": net, "batch_size": 3, "chunk_size": 6}
    ref = collect(jpeg_root, tmp_path / "pil.zarr", decode="cpu", **kwargs)
    got = collect(jpeg_root, tmp_path / "t.zarr", decode=decode, **kwargs)
    assert got.skipped == ref.skipped == {"truncated": 1, "empty file": 1, "not an image": 1}
    assert got.n_images == ref.n_images == 18
    a, b = _store(tmp_path / "pil.zarr"), _store(tmp_path / "t.zarr")
    assert a.attrs["actstats"]["decode"] == "cpu" and b.attrs["actstats"]["decode"] == decode
    np.testing.assert_array_equal(a["images/ok"][:], b["images/ok"][:])
    np.testing.assert_array_equal(a["images/error"][:], b["images/error"][:])
    for e in a.attrs["actstats"]["layers"]:
        np.testing.assert_allclose(
            b[f"acts/{e['name']}"][:], a[f"acts/{e['name']}"][:], rtol=ACTS_RTOL, atol=ACTS_ATOL
        )
    assert {"decode", "device_decode", "forward", "write"} <= set(got.stage_seconds)


def test_device_decode_failure_falls_back_to_pil(
    net: Network, jpeg_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch the device decoder rejects goes file by file, then through PIL,
    which decodes good files and names bad ones."""
    root = tmp_path / "data"
    shutil.copytree(jpeg_root, root)
    # passes jpeg_bytes' header checks, but the scan data is garbage
    good = (root / "a" / "1.jpg").read_bytes()
    (root / "a" / "garbled.jpg").write_bytes(good[:200] + b"\x00" * 40 + b"\xff\xd9")
    kwargs = {"network": net, "batch_size": 4, "layers": ["fc8"]}
    ref = collect(root, tmp_path / "pil.zarr", decode="cpu", **kwargs)
    real = collect_graph.decode_jpegs
    calls = []

    def flaky(datas, device):
        calls.append(len(datas))
        if len(datas) > 1:
            raise RuntimeError("batch rejected")
        return real(datas, device)

    monkeypatch.setattr(collect_graph, "decode_jpegs", flaky)
    got = collect(root, tmp_path / "t.zarr", decode="gpu", **kwargs)
    assert any(n > 1 for n in calls) and 1 in calls
    assert got.skipped == ref.skipped
    a, b = _store(tmp_path / "pil.zarr"), _store(tmp_path / "t.zarr")
    np.testing.assert_array_equal(a["images/ok"][:], b["images/ok"][:])
    np.testing.assert_array_equal(a["images/error"][:], b["images/error"][:])
    np.testing.assert_allclose(b["acts/fc8"][:], a["acts/fc8"][:], rtol=ACTS_RTOL, atol=ACTS_ATOL)


def test_float16_store_matches_float32(net: Network, jpeg_root: Path, tmp_path: Path) -> None:
    """The store dtype cast happens on the device now; same rounding as numpy's."""
    kwargs = {"network": net, "batch_size": 4, "layers": ["fc7", "conv5_1"]}
    collect(jpeg_root, tmp_path / "f.zarr", **kwargs)
    collect(jpeg_root, tmp_path / "h.zarr", dtype="float16", **kwargs)
    f, h = _store(tmp_path / "f.zarr"), _store(tmp_path / "h.zarr")
    for name in ("fc7", "conv5_1"):
        assert h[f"acts/{name}"].dtype == np.float16
        np.testing.assert_array_equal(h[f"acts/{name}"][:], f[f"acts/{name}"][:].astype(np.float16))


def test_unknown_decoder_is_refused(net: Network, jpeg_root: Path, tmp_path: Path) -> None:
    with pytest.raises(ActstatsError, match="--decode"):
        collect(jpeg_root, tmp_path / "x.zarr", network=net, decode="nvjpeg")


def test_resize_by_size_equals_one_call_per_image() -> None:
    """One resize per (device, channels, height, width) bucket gives the per-image pixels."""
    import torch

    g = torch.Generator().manual_seed(0)
    shapes = [(3, 375, 500), (3, 500, 375), (3, 375, 500), (3, 333, 500), (3, 375, 500)]
    images = {
        i: torch.randint(0, 256, s, dtype=torch.uint8, generator=g) for i, s in enumerate(shapes)
    }
    resize_crop = geometry(Preprocessing(resize=64, crop=56, mean=[0.5] * 3, std=[0.5] * 3))
    calls = []

    def counted(x):
        calls.append(x.shape[0] if x.dim() == 4 else 1)
        return resize_crop(x)

    got = collect_graph.resize_by_size(images, counted)
    assert sorted(calls) == [1, 1, 3]  # three buckets, the 500x375 one batched
    for i, img in images.items():
        assert torch.equal(got[i], resize_crop(img)), i


def test_host_threads_are_one_per_thread_for_an_accelerator_and_restored() -> None:
    import torch

    before = torch.get_num_threads()
    with collect_graph.host_threads_for(torch.device("meta")):  # any device but the CPU
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with collect_graph.host_threads_for(torch.device("cpu")):  # the forward's own pool
        assert torch.get_num_threads() == before


def test_geometry_works_while_fx_traces_a_network() -> None:
    """The decode threads resize while the forward thread may FX-trace the network for
    --compile; tracing patches nn.Module.__call__ process-wide, so geometry must not be a
    module (a v2 Compose here raised "module is not installed as a submodule")."""
    import torch
    from torch import nn

    resize_crop = geometry(Preprocessing(resize=40, crop=32))
    img = torch.randint(0, 256, (3, 50, 60), dtype=torch.uint8)
    want, got = resize_crop(img), {}

    class Probe(nn.Module):
        def forward(self, x):
            got["img"] = resize_crop(img)  # a real image, resized mid-trace
            return x + 1

    torch.fx.symbolic_trace(Probe())
    assert torch.equal(got["img"], want)
