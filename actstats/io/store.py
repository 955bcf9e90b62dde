"""The activation store: a zarr v3 group that plain ``zarr`` and ``xarray`` can read.

Layout (a contract with the fit stage)::

    store.zarr/                      attrs["actstats"]: see schemas/store-attrs.schema.json
      images/path   (N,) str         relative to the data root, sorted by class then name
      images/label  (N,) int32       index into attrs class_names
      images/ok     (N,) bool        False for skipped files and rows not yet written
      images/skipped (K,) int64      rows whose ok is False, one chunk, written when the
                                     run finishes (readers of a complete store use it)
      images/error  (N,) str         why a row was skipped ("" when ok)
      images/done   (C,) bool        one per chunk of N, set after the chunk is written
      images/size, images/mtime_ns (N,) int64   the file's size and mtime when it was
                                     read (-1: not yet); a resume refuses changed files
      images/clipped (N,) int32      float16 stores: values clipped to +-65504 in the row
      acts/<layer>  (N, D)           float16/float32, chunks (chunk_size, D), NaN where not ok
      errors/path, errors/reason (K,) str   skipped files and empty class folders

A store lives at any fsspec location: a local path, ``file://``, ``memory://``
(this process only), or ``s3://``/``gs://``/... when that fsspec backend is
installed (credentials come from the backend's usual environment/config).
zarr opens URLs through ``zarr.storage.FsspecStore``.

Every array is allocated first (metadata only). A writer then owns whole
chunks along N (:func:`write_chunk`) so parallel tasks share no chunk and
need no lock; ``done`` has one chunk per element for the same reason. Each
array carries zarr v3 ``dimension_names`` so ``xarray.open_zarr`` reads it.

Creation is detectable when interrupted: the group's first attribute is
``actstats_creating`` and the ``actstats`` metadata replaces it only after
every array exists, so a store killed while being created (or by a full disk)
is recognised as actstats' own and created again by the next run. Replacing
(``--overwrite``) removes only a store whose attrs say actstats made it;
locally the old store is first renamed aside, so a kill never leaves half of it.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fsspec
import jsonschema
import numpy as np
import zarr

from actstats.errors import ActstatsError
from actstats.io.paths import is_local, local_path
from actstats.resources import validate_json

__all__ = [
    "ACTS_CODECS",
    "DEFAULT_ACTS_CODEC",
    "STORE_VERSION",
    "ActivationStore",
    "batched_reads",
    "create_store",
    "default_chunk_size",
    "finish_store",
    "is_process_local",
    "open_store",
    "resolve_location",
    "store_exists",
    "store_state",
    "validate_attrs",
    "write_chunk",
    "write_errors",
]

STORE_VERSION = "1"
_SCHEMA_NAME = "store-attrs.schema.json"
_TARGET_CHUNK_BYTES = 32 * 2**20
#: Attribute a store carries while its arrays are being allocated.
_CREATING = "actstats_creating"

#: Compressors of the ``acts/<layer>`` arrays by name (``benchmarks/fit.py`` measures
#: their size and read speed on activation-like rows).
ACTS_CODECS: dict[str, Any] = {
    "none": None,
    "lz4": zarr.codecs.BloscCodec(cname="lz4", clevel=5, shuffle="shuffle"),
    "zstd": zarr.codecs.ZstdCodec(level=0),
}
#: The codec ``collect`` writes activations with. Measured on 2 loaded CPUs
#: (``benchmarks/results/fit-2cpu-shared-loaded*.md``, dense rectified float32 rows):
#: none / lz4 / zstd store 1.00 / 0.89 / 0.81 of the raw bytes and read in 0.10 / 0.14 /
#: 0.65 s (50k x 256; 0.9 / 1.7 / 2.8 s at 100k): zstd's extra 8 % of space costs
#: 1.6-4.7x lz4's read time (2x its CPU time).
DEFAULT_ACTS_CODEC = "lz4"


def default_chunk_size(batch_size: int, row_bytes: int) -> int:
    """A multiple of ``batch_size`` whose widest-layer chunk is at most ~32 MiB (max 8 batches).

    Whole batches keep every forward pass full; the cap bounds the memory a
    task holds and the work a killed run loses.
    """
    batches = max(1, min(8, _TARGET_CHUNK_BYTES // max(1, row_bytes * batch_size)))
    return batch_size * batches


def validate_attrs(attrs: dict[str, Any], where: str = "store") -> None:
    """Check ``attrs["actstats"]`` against ``schemas/store-attrs.schema.json``."""
    try:
        validate_json(attrs, _SCHEMA_NAME)
    except jsonschema.ValidationError as exc:
        field = "/".join(str(p) for p in exc.absolute_path) or "(top)"
        raise ActstatsError(f"{where}: attrs field {field}: {exc.message}") from None


def resolve_location(location: str | os.PathLike) -> str:
    """An absolute local path, or the URL unchanged (recorded in provenance, sent to workers)."""
    text = os.fspath(location)
    return text if "://" in text else str(Path(text).resolve())


def store_exists(location: str | os.PathLike) -> bool:
    """Whether anything exists at ``location`` (local path or fsspec URL)."""
    fs, path = fsspec.core.url_to_fs(os.fspath(location))
    return bool(fs.exists(path))


def is_process_local(location: str | os.PathLike) -> bool:
    """Whether ``location`` lives in this process's memory, out of reach of dask workers."""
    return os.fspath(location).startswith("memory://")


def store_state(location: str | os.PathLike) -> str:
    """What is at ``location``: ``missing``, ``empty`` (a folder with nothing in it),
    ``creating`` (an interrupted creation), ``actstats`` (a store), or ``foreign``."""
    fs, path = fsspec.core.url_to_fs(os.fspath(location))
    if not fs.exists(path):
        return "missing"
    if fs.isdir(path) and not fs.ls(path):
        return "empty"
    try:
        attrs = dict(zarr.open_group(os.fspath(location), mode="r").attrs)
    except Exception:  # a file, another format, unreadable zarr.json: not ours
        return "foreign"
    if isinstance(attrs.get("actstats"), dict):
        return "actstats"
    return "creating" if _CREATING in attrs else "foreign"


def _remove(location: str) -> None:
    """Remove a store; locally rename it aside first, so a kill never leaves half of it."""
    if is_local(location):
        path = local_path(location)
        aside = path.with_name(f".{path.name}.actstats-removing-{uuid.uuid4().hex[:8]}")
        os.replace(path, aside)
        location = str(aside)
    fs, path = fsspec.core.url_to_fs(location)
    fs.rm(path, recursive=True)


@dataclass
class ActivationStore:
    """An opened store: its metadata and the zarr group (arrays are read lazily).

    ``path`` is the location as given: a local path or an fsspec URL.
    """

    path: str
    group: zarr.Group
    attrs: dict[str, Any]

    @property
    def layers(self) -> list[str]:
        """Layer names, shallow to deep."""
        return [layer["name"] for layer in self.attrs["layers"]]

    @property
    def chunk_size(self) -> int:
        """Rows per chunk along N."""
        return int(self.attrs["chunk_size"])

    def labels(self) -> np.ndarray:
        """Class index of every row (int64, shape (N,))."""
        return np.asarray(self.group["images/label"][:], dtype=np.int64)

    def clipped(self) -> int:
        """float16 values clipped to +-65504 over the whole store (0 for older stores)."""
        images = self.group["images"]
        return int(images["clipped"][:].sum()) if "clipped" in images else 0

    def ok(self) -> np.ndarray:
        """Whether each row holds activations (False for skipped files), shape (N,).

        A complete store answers from ``images/skipped`` (one chunk) instead of
        ``images/ok``, whose one chunk per chunk of rows cost fit's plan 0.11 s at
        200k rows (391 chunks; zarr reads each through its event loop).
        """
        images = self.group["images"]
        if not (self.attrs.get("complete") and "skipped" in images):
            return np.asarray(images["ok"][:], dtype=bool)
        n = int(images["ok"].shape[0])
        rows = np.asarray(images["skipped"][:])
        if rows.ndim != 1 or rows.dtype.kind not in "iu" or np.any((rows < 0) | (rows >= n)):
            raise ActstatsError(
                f"store {self.path}: images/skipped is not a list of rows in 0..{n - 1}; "
                "re-run `actstats collect` on it to rewrite it"
            )
        ok = np.ones(n, dtype=bool)
        ok[rows] = False
        return ok

    @property
    def done(self) -> np.ndarray:
        """One flag per chunk of N."""
        return self.group["images/done"][:]

    def acts(self, layer: str) -> zarr.Array:
        """The (N, D) array of ``layer``."""
        if layer not in self.layers:
            raise ActstatsError(
                f"store {self.path}: no layer {layer!r}; has {', '.join(self.layers)}"
            )
        return self.group[f"acts/{layer}"]

    def read_ahead(
        self, layer: str, span: tuple[int, int], piece_bytes: int = 8 * 2**20
    ) -> Iterator[tuple[int, np.ndarray]]:
        """``(start, rows)`` of ``acts/<layer>`` over ``span`` in pieces of whole chunks
        (about ``piece_bytes``), the next piece read while the caller works on this one.

        Why: zarr reads through one event-loop thread; a task that reads and then
        computes leaves a core idle while it reads. A helper thread keeps one piece in
        flight, so reading overlaps the caller's (GIL-free) BLAS work.
        """
        arr = self.acts(layer)
        row_bytes = max(1, int(np.prod(arr.shape[1:])) * arr.dtype.itemsize)
        step = self.chunk_size * max(1, piece_bytes // (row_bytes * self.chunk_size))
        starts = range(span[0], span[1], step)
        if not starts:
            return

        def piece(start: int) -> np.ndarray:
            return np.asarray(arr[start : min(start + step, span[1])])

        with ThreadPoolExecutor(1, thread_name_prefix="actstats-read") as pool:
            pending = pool.submit(piece, starts[0])
            for start in starts:
                rows = pending.result()
                if start + step < span[1]:
                    pending = pool.submit(piece, start + step)
                yield start, rows

    def errors(self) -> list[tuple[str, str]]:
        """``(path, reason)`` of every skipped file or folder (after the run finished)."""
        if "errors" not in self.group:
            return []
        paths = self.group["errors/path"][:]
        reasons = self.group["errors/reason"][:]
        return [(str(p), str(r)) for p, r in zip(paths, reasons, strict=True)]


#: zarr's codec-pipeline batch size while actstats reads a store in many tasks (zarr's
#: default is 1: one round trip through its event loop per chunk). Measured with
#: ``benchmarks/fit.py`` on 2 CPUs: fit's pass 1 0.46 s -> 0.43 s (200k x 256 rows in
#: 512-row chunks); 64 measured the same as 16.
READ_BATCH_SIZE = 16


@contextlib.contextmanager
def batched_reads() -> Iterator[None]:
    """Within: arrays opened (in this process) decode chunks in batches of
    :data:`READ_BATCH_SIZE`. Enter it around a computation, not inside its tasks: zarr's
    configuration is process-wide."""
    with zarr.config.set({"codec_pipeline.batch_size": READ_BATCH_SIZE}):
        yield


def open_store(path: str | os.PathLike, *, mode: str = "r") -> ActivationStore:
    """Open a store written by ``actstats collect`` (local path or URL); check its metadata.

    The one reader: collect (resume), fit, tests and fixtures all open stores here.
    """
    path = os.fspath(path)
    try:
        group = zarr.open_group(path, mode=mode)
    except (OSError, zarr.errors.GroupNotFoundError, ValueError) as exc:  # OSError: a file
        raise ActstatsError(
            f"store {path}: not a zarr group, so not a readable activation store ({exc}); "
            "run `actstats collect` to make one"
        ) from None
    attrs = dict(group.attrs).get("actstats")
    if not isinstance(attrs, dict):
        raise ActstatsError(
            f"store {path}: no actstats metadata: attrs['actstats'] is missing; "
            "run `actstats collect` first"
        )
    for name in _REQUIRED_ARRAYS:
        if name not in group:
            raise ActstatsError(
                f"store {path}: array '{name}' is missing; re-run `actstats collect`"
            )
    validate_attrs(attrs, f"store {path}")
    return ActivationStore(path, group, attrs)


#: Rows per chunk of ``images/label``, written once when the store is created (unlike the
#: per-chunk arrays that collect's tasks fill): a few large chunks instead of one per
#: chunk of rows, which cost fit's plan 0.15 s of reads for 200k rows (391 chunks).
LABEL_CHUNK_ROWS = 1 << 20

#: Arrays every store has from the moment it is created.
_REQUIRED_ARRAYS = ("images/label", "images/ok", "images/path", "images/done")


def create_store(
    path: str | os.PathLike,
    attrs: dict[str, Any],
    paths: list[str],
    labels: np.ndarray,
    *,
    overwrite: bool = False,
    acts_codec: str = DEFAULT_ACTS_CODEC,
) -> ActivationStore:
    """Allocate every array (metadata only) and write the file list.

    ``attrs`` is the ``actstats`` metadata with ``complete`` false; it names the
    layers with their ``dim``, the ``chunk_size`` and the ``dtype``. An empty
    folder or an interrupted creation at ``path`` is replaced; an actstats
    store only with ``overwrite``; anything else never. ``acts_codec`` names the
    activations' compressor (a key of :data:`ACTS_CODECS`).
    """
    path = os.fspath(path)
    validate_attrs(attrs, f"store {path}")
    state = store_state(path)
    if state == "foreign":
        raise ActstatsError(
            f"store {path}: exists and is not an actstats store; refusing to replace it: "
            "choose another -o"
        )
    if state == "actstats" and not overwrite:
        raise ActstatsError(f"store {path}: already exists; pass --overwrite to replace it")
    if state != "missing":
        _remove(path)
    n, chunk = int(attrs["n_images"]), int(attrs["chunk_size"])
    group = zarr.open_group(path, mode="w")
    group.attrs[_CREATING] = {"version": STORE_VERSION}
    _allocate(group, attrs, paths, labels, n, chunk, acts_codec)
    group.attrs.put({"actstats": attrs})  # replaces the creating mark: the store is usable
    return ActivationStore(path, group, attrs)


def _allocate(
    group: zarr.Group,
    attrs: dict[str, Any],
    paths: list[str],
    labels: np.ndarray,
    n: int,
    chunk: int,
    acts_codec: str,
) -> None:
    n_chunks = -(-n // chunk)
    images = group.create_group("images")
    images.create_array(
        "path", shape=(n,), chunks=(chunk,), dtype=str, fill_value="", dimension_names=["image"]
    )[:] = np.asarray(paths, dtype=str)
    images.create_array(
        "label",
        shape=(n,),
        chunks=(max(1, min(n, LABEL_CHUNK_ROWS)),),
        dtype=np.int32,
        fill_value=-1,
        dimension_names=["image"],
    )[:] = np.asarray(labels, dtype=np.int32)
    images.create_array(
        "ok", shape=(n,), chunks=(chunk,), dtype=bool, fill_value=False, dimension_names=["image"]
    )
    images.create_array(
        "error", shape=(n,), chunks=(chunk,), dtype=str, fill_value="", dimension_names=["image"]
    )
    for name, dtype, fill in (
        ("size", np.int64, -1),
        ("mtime_ns", np.int64, -1),
        ("clipped", np.int32, 0),
    ):
        images.create_array(
            name,
            shape=(n,),
            chunks=(chunk,),
            dtype=dtype,
            fill_value=fill,
            dimension_names=["image"],
        )
    images.create_array(
        "done",
        shape=(n_chunks,),
        chunks=(1,),
        dtype=bool,
        fill_value=False,
        dimension_names=["chunk"],
    )
    acts = group.create_group("acts")
    for layer in attrs["layers"]:
        acts.create_array(
            layer["name"],
            shape=(n, layer["dim"]),
            chunks=(chunk, layer["dim"]),
            dtype=attrs["dtype"],
            fill_value=float("nan"),
            compressors=ACTS_CODECS[acts_codec],
            dimension_names=["image", f"{layer['name']}_unit"],
        )


def write_chunk(
    store: ActivationStore,
    index: int,
    acts: dict[str, np.ndarray],
    ok: np.ndarray,
    errors: list[str],
    *,
    file_stats: np.ndarray | None = None,
    clipped: np.ndarray | None = None,
) -> None:
    """Write chunk ``index`` of every array, then set its done flag.

    ``acts`` holds (rows, D) arrays for all rows of the chunk (NaN where not
    ok). ``file_stats`` is (rows, 2) int64 size and mtime_ns of each file as
    read (-1 where it could not be stat'ed), ``clipped`` the float16 values
    clipped per row. The flag is written last, so a chunk whose flag is set is
    complete.
    """
    chunk = int(store.attrs["chunk_size"])
    start = index * chunk
    stop = start + len(ok)
    if (
        start % chunk
        or stop > int(store.attrs["n_images"])
        or (len(ok) != chunk and stop != int(store.attrs["n_images"]))
    ):
        raise ValueError(f"rows {start}:{stop} are not chunk {index} of size {chunk}")
    group = store.group
    for layer, rows in acts.items():
        group[f"acts/{layer}"][start:stop] = rows
    group["images/ok"][start:stop] = ok
    group["images/error"][start:stop] = np.asarray(errors, dtype=object).astype(str)
    if file_stats is not None and "size" in group["images"]:
        group["images/size"][start:stop] = file_stats[:, 0]
        group["images/mtime_ns"][start:stop] = file_stats[:, 1]
    if clipped is not None and "clipped" in group["images"]:
        group["images/clipped"][start:stop] = clipped
    group["images/done"][index] = True


def finish_store(store: ActivationStore, errors: list[tuple[str, str]]) -> None:
    """Record the skipped files and rows, then mark the store complete (every chunk must
    be done): ``images/skipped`` is written before the flag, so a complete store has it."""
    if not store.done.all():
        raise ActstatsError(f"store {store.path}: some chunks were not written; rerun to resume")
    write_errors(store, errors)
    skipped = np.flatnonzero(~np.asarray(store.group["images/ok"][:], dtype=bool))
    store.group["images"].create_array(
        "skipped",
        shape=skipped.shape,
        dtype=np.int64,
        chunks=(max(1, len(skipped)),),
        fill_value=0,
        dimension_names=["skipped"],
        overwrite=True,
    )
    if len(skipped):
        store.group["images/skipped"][:] = skipped
    store.attrs["complete"] = True
    store.attrs["float16_clipped"] = store.clipped()
    store.group.attrs["actstats"] = store.attrs


def write_errors(store: ActivationStore, errors: list[tuple[str, str]]) -> None:
    """Write the compact ``errors/path`` and ``errors/reason`` arrays (run finished)."""
    group = store.group.require_group("errors")
    for name, col in (("path", 0), ("reason", 1)):
        values = np.asarray([e[col] for e in errors], dtype=object).astype(str)
        group.create_array(
            name,
            shape=(len(errors),),
            dtype=str,
            fill_value="",
            chunks=(max(1, len(errors)),),
            dimension_names=["error"],
            overwrite=True,
        )
        if errors:
            group[name][:] = values
