"""Class-folder discovery, decoding to RGB, and naming bad files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import actstats.io.data
from actstats.errors import ActstatsError
from actstats.io.data import BadImageError, discover, load_image, read_class_list


def _png(path: Path, mode: str = "RGB", size: tuple[int, int] = (4, 4), color=(10, 20, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path)
    return path


def test_discover_sorted_per_class_and_classes(tmp_path: Path) -> None:
    for cls in ("b", "a", "c"):
        for name in ("2.png", "1.png", "3.png"):
            _png(tmp_path / cls / name)
    (tmp_path / "a" / ".hidden").write_text("x")
    (tmp_path / "empty").mkdir()
    ds = discover(tmp_path, per_class=2)
    assert ds.class_names == ["a", "b", "c"] and ds.empty_classes == ["empty"]
    assert ds.paths[:3] == ["a/1.png", "a/2.png", "b/1.png"]
    assert list(ds.labels) == [0, 0, 1, 1, 2, 2]
    listing = tmp_path / "classes.txt"
    listing.write_text("# wanted\nc\n\na\n")
    ds = discover(tmp_path, classes=read_class_list(str(listing)))
    assert ds.class_names == ["a", "c"] and len(ds.paths) == 6
    assert read_class_list("c, a") == ["c", "a"]
    with pytest.raises(ActstatsError, match=r"unknown class 'z'.*valid: a, b, c, empty"):
        discover(tmp_path, classes=["z"])
    with pytest.raises(ActstatsError, match=r"no such directory"):
        discover(tmp_path / "missing")
    with pytest.raises(ActstatsError, match=r"--per-class 0"):
        discover(tmp_path, per_class=0)
    with pytest.raises(ActstatsError, match=r"every class folder is empty"):
        discover(tmp_path, classes=["empty"])
    with pytest.raises(ActstatsError, match=r"no class folders; expected ROOT/<class>"):
        discover(tmp_path / "empty")


def _reason(path: Path) -> str:
    with pytest.raises(BadImageError) as info:
        load_image(path)
    return info.value.reason


def test_bad_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    good = _png(tmp_path / "good.png", size=(64, 64))
    data = good.read_bytes()
    (tmp_path / "empty.png").write_bytes(b"")
    assert _reason(tmp_path / "empty.png") == "empty file"
    (tmp_path / "text.jpg").write_text("hello")
    assert _reason(tmp_path / "text.jpg") == "not an image"
    (tmp_path / "trunc.png").write_bytes(data[: len(data) // 2])
    assert _reason(tmp_path / "trunc.png") == "truncated"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "n.jpg")
    jpeg = bytearray((tmp_path / "n.jpg").read_bytes())
    (tmp_path / "trunc.jpg").write_bytes(bytes(jpeg[: len(jpeg) // 2]))
    assert _reason(tmp_path / "trunc.jpg") == "truncated"
    Image.open(tmp_path / "n.jpg").save(tmp_path / "n.png")
    corrupt = bytearray((tmp_path / "n.png").read_bytes())
    mid = len(corrupt) // 2
    corrupt[mid : mid + 64] = bytes(range(64))  # inside the image data: zlib/CRC failure
    (tmp_path / "corrupt.png").write_bytes(bytes(corrupt))
    assert _reason(tmp_path / "corrupt.png") == "corrupt"
    (tmp_path / "link.png").symlink_to(tmp_path / "gone.png")
    assert _reason(tmp_path / "link.png") == "broken symlink"
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 64x64 is now a bomb
    assert _reason(good) == "decompression bomb"
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1500)  # PIL itself raises above 2x
    assert _reason(good) == "decompression bomb"


def test_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # chmod 0 does not stop root (CI), so make the loader's open() refuse the file.
    path = _png(tmp_path / "secret.png")
    real_open = open

    def refuse(file, *args, **kwargs):
        if Path(file) == path:
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(actstats.io.data, "open", refuse, raising=False)
    assert _reason(path) == "unreadable"


def test_modes_convert_to_rgb(tmp_path: Path) -> None:
    rgb = lambda p: np.asarray(load_image(p))[0, 0].tolist()  # noqa: E731
    assert rgb(_png(tmp_path / "l.png", "L", color=77)) == [77, 77, 77]
    sixteen = Image.fromarray(np.full((4, 4), 51400, dtype=np.uint16))  # 200 * 257
    sixteen.save(tmp_path / "i16.png")
    assert Image.open(tmp_path / "i16.png").mode.startswith("I")
    assert rgb(tmp_path / "i16.png") == [200, 200, 200]
    cmyk = Image.new("CMYK", (4, 4), (255, 0, 0, 0))  # pure cyan
    cmyk.save(tmp_path / "c.tiff")
    assert rgb(tmp_path / "c.tiff") == [0, 255, 255]
    Image.new("CMYK", (4, 4), (0, 0, 0, 255)).save(tmp_path / "k.tiff")
    assert rgb(tmp_path / "k.tiff") == [0, 0, 0]
    pal = Image.new("P", (4, 4), 1)
    pal.putpalette([0, 0, 0, 12, 34, 56] + [0] * 762)
    pal.save(tmp_path / "p.png")
    assert rgb(tmp_path / "p.png") == [12, 34, 56]
    pal.save(tmp_path / "pt.png", transparency=1)
    assert rgb(tmp_path / "pt.png") == [255, 255, 255]  # transparent -> white
    assert rgb(_png(tmp_path / "clear.png", "RGBA", color=(255, 0, 0, 0))) == [255, 255, 255]
    assert rgb(_png(tmp_path / "opaque.png", "RGBA", color=(0, 0, 255, 255))) == [0, 0, 255]
    half = rgb(_png(tmp_path / "half.png", "LA", color=(0, 128)))
    assert all(abs(v - 127) <= 1 for v in half)
    assert rgb(_png(tmp_path / "bw.png", "1", color=1)) == [255, 255, 255]
