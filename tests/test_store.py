"""The zarr layout: allocation, region writes, done flags, validation, plain readers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr
from hypothesis import given
from hypothesis import strategies as st

from actstats.errors import ActstatsError
from actstats.io.store import (
    LABEL_CHUNK_ROWS,
    create_store,
    default_chunk_size,
    finish_store,
    open_store,
    validate_attrs,
    write_chunk,
    write_errors,
)


def _attrs(n: int = 10, chunk: int = 4) -> dict:
    return {
        "version": "1",
        "model": "m",
        "weights": "none",
        "weights_sha256": None,
        "preprocessing": {"resize": 8, "crop": 8, "mean": [0.5] * 3, "std": [0.5] * 3},
        "layers": [{"name": "fc", "module": "fc", "reduce": "full", "shape": [3], "dim": 3}],
        "class_names": ["a", "b"],
        "chunk_size": chunk,
        "n_images": n,
        "dtype": "float32",
        "complete": False,
    }


def test_create_write_open(tmp_path: Path) -> None:
    paths = [f"a/{i}.png" for i in range(5)] + [f"b/{i}.png" for i in range(5)]
    labels = np.repeat([0, 1], 5)
    store = create_store(tmp_path / "s.zarr", _attrs(), paths, labels)
    assert not store.done.any() and len(store.done) == 3
    write_chunk(store, 2, {"fc": np.ones((2, 3))}, np.array([True, False]), ["", "corrupt"])
    with pytest.raises(ValueError, match="not chunk 1"):
        write_chunk(store, 1, {"fc": np.ones((2, 3))}, np.array([True, True]), ["", ""])
    write_errors(store, [("b/4.png", "corrupt")])
    opened = open_store(tmp_path / "s.zarr")
    assert list(opened.done) == [False, False, True]
    acts = opened.acts("fc")[:]
    assert np.isnan(acts[:8]).all() and (acts[8:] == 1).all()
    assert opened.errors() == [("b/4.png", "corrupt")]
    plain = zarr.open(str(tmp_path / "s.zarr"), mode="r")
    assert list(plain["images/path"][:]) == paths
    assert plain["images/label"].dtype == np.int32
    assert plain["images/label"].chunks == (10,)  # written once: one chunk, not one per 4 rows
    assert list(opened.labels()) == list(labels)
    ds = xr.open_zarr(tmp_path / "s.zarr", group="images", consolidated=False)
    assert ds["ok"].dims == ("image",) and int(ds["ok"].sum()) == 1
    with pytest.raises(ActstatsError, match="no layer 'conv'"):
        opened.acts("conv")


def test_label_chunks_are_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("actstats.io.store.LABEL_CHUNK_ROWS", 3)
    labels = np.arange(10) % 2
    store = create_store(tmp_path / "s.zarr", _attrs(), [f"{i}.png" for i in range(10)], labels)
    assert store.group["images/label"].chunks == (3,) and LABEL_CHUNK_ROWS >= 2**16
    assert list(open_store(tmp_path / "s.zarr").labels()) == list(labels)


def test_refusals(tmp_path: Path) -> None:
    create_store(tmp_path / "s.zarr", _attrs(), ["x"] * 10, np.zeros(10))
    with pytest.raises(ActstatsError, match="already exists; pass --overwrite"):
        create_store(tmp_path / "s.zarr", _attrs(), ["x"] * 10, np.zeros(10))
    bad = _attrs() | {"dtype": "int8"}
    with pytest.raises(ActstatsError, match=r"attrs field dtype: 'int8' is not one of"):
        validate_attrs(bad)
    with pytest.raises(ActstatsError, match="not a zarr group"):
        open_store(tmp_path / "nothing.zarr")
    zarr.open_group(str(tmp_path / "plain.zarr"), mode="w")
    with pytest.raises(ActstatsError, match="no actstats metadata"):
        open_store(tmp_path / "plain.zarr")


@given(batch=st.integers(1, 512), row_bytes=st.integers(1, 10**7))
def test_default_chunk_size(batch: int, row_bytes: int) -> None:
    chunk = default_chunk_size(batch, row_bytes)
    assert chunk % batch == 0 and batch <= chunk <= 8 * batch
    assert chunk == batch or chunk * row_bytes <= 32 * 2**20


def test_errors_group_reads_with_xarray(tmp_path: Path) -> None:
    store = create_store(tmp_path / "s.zarr", _attrs(), ["x"] * 10, np.zeros(10))
    write_errors(store, [("a/1.png", "corrupt"), ("b/", "empty class folder")])
    ds = xr.open_zarr(tmp_path / "s.zarr", group="errors", consolidated=False)
    assert ds["path"].dims == ds["reason"].dims == ("error",)
    assert list(ds["reason"].values) == ["corrupt", "empty class folder"]


def test_every_array_names_its_dimensions(tmp_path: Path) -> None:
    """The documented layout, as xarray reads it: one ``image`` axis shared by images/*,
    ``chunk`` for the done flags, ``(image, <layer>_unit)`` for activations."""
    create_store(tmp_path / "s.zarr", _attrs(), ["x"] * 10, np.zeros(10))
    images = xr.open_zarr(tmp_path / "s.zarr", group="images", consolidated=False)
    dims = {name: images[name].dims for name in images.variables}
    assert dims == {
        **dict.fromkeys(
            ["path", "label", "ok", "error", "size", "mtime_ns", "clipped"], ("image",)
        ),
        "done": ("chunk",),
    }
    acts = xr.open_zarr(tmp_path / "s.zarr", group="acts", consolidated=False)
    assert acts["fc"].dims == ("image", "fc_unit") and acts["fc"].shape == (10, 3)


def test_fresh_store_holds_the_documented_placeholders(tmp_path: Path) -> None:
    """Before any chunk is written: no row ok, no error text, sizes and mtimes -1
    ("not yet"), no clipping, no chunk done, activations NaN."""
    labels = np.repeat([0, 1], 5)
    create_store(tmp_path / "s.zarr", _attrs(), [f"{i}.png" for i in range(10)], labels)
    g = zarr.open_group(str(tmp_path / "s.zarr"), mode="r")
    np.testing.assert_array_equal(g["images/label"][:], labels)
    assert not g["images/ok"][:].any() and not g["images/done"][:].any()
    assert list(g["images/error"][:]) == [""] * 10
    np.testing.assert_array_equal(g["images/size"][:], -1)
    np.testing.assert_array_equal(g["images/mtime_ns"][:], -1)
    np.testing.assert_array_equal(g["images/clipped"][:], 0)
    assert np.isnan(g["acts/fc"][:]).all()


def test_complete_store_answers_ok_from_its_skipped_rows(tmp_path: Path) -> None:
    """finish_store records the rows whose ok is False in one chunk; a complete store's
    ok() is read from it (the per-chunk images/ok is not needed), and a tampered list
    is refused."""
    paths = [f"a/{i}.png" for i in range(5)] + [f"b/{i}.png" for i in range(5)]
    store = create_store(tmp_path / "s.zarr", _attrs(), paths, np.repeat([0, 1], 5))
    ok = np.array([True, False, True, True, True, True, True, False, False, True])
    for index, start in enumerate(range(0, 10, 4)):
        part = ok[start : start + 4]
        rows = np.where(part[:, None], 1.0, np.nan) * np.ones((len(part), 3))
        write_chunk(store, index, {"fc": rows}, part, ["" if o else "bad" for o in part])
    assert list(open_store(tmp_path / "s.zarr").ok()) == list(ok)  # not complete: images/ok
    finish_store(store, [])
    plain = zarr.open_group(str(tmp_path / "s.zarr"), mode="r")
    assert list(plain["images/skipped"][:]) == [1, 7, 8]
    assert plain["images/skipped"].chunks == (3,)
    for f in (tmp_path / "s.zarr" / "images" / "ok" / "c").iterdir():  # the per-chunk array gone
        f.unlink()
    assert list(open_store(tmp_path / "s.zarr").ok()) == list(ok)
    zarr.open_array(str(tmp_path / "s.zarr" / "images" / "skipped"), mode="r+")[:] = [1, 7, 10]
    with pytest.raises(ActstatsError, match=r"images/skipped .* rows in 0\.\.9"):
        open_store(tmp_path / "s.zarr").ok()


def test_read_ahead_yields_the_span_in_whole_chunk_pieces(tmp_path: Path) -> None:
    """Pieces are whole chunks of about piece_bytes, in order, equal to plain slicing."""
    n, chunk = 50, 4
    store = create_store(
        tmp_path / "s.zarr", _attrs(n, chunk), [f"a/{i}.png" for i in range(n)], np.zeros(n)
    )
    X = np.arange(n * 3, dtype=np.float32).reshape(n, 3)
    for index, start in enumerate(range(0, n, chunk)):
        part = X[start : start + chunk]
        write_chunk(store, index, {"fc": part}, np.ones(len(part), bool), [""] * len(part))
    opened = open_store(tmp_path / "s.zarr")
    row_bytes = 3 * 4
    pieces = list(opened.read_ahead("fc", (8, 47), piece_bytes=2 * chunk * row_bytes + 5))
    assert [s for s, _ in pieces] == [8, 16, 24, 32, 40]  # two chunks a piece
    assert [len(x) for _, x in pieces] == [8, 8, 8, 8, 7]
    np.testing.assert_array_equal(np.concatenate([x for _, x in pieces]), X[8:47])
    assert [s for s, _ in opened.read_ahead("fc", (0, n), piece_bytes=1)] == list(
        range(0, n, chunk)
    )
    assert list(opened.read_ahead("fc", (12, 12))) == []
