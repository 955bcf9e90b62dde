"""Save and load fitted models: a directory of ``.npy`` files plus ``manifest.json``.

Layout::

    MODELS/
      manifest.json          validated against schemas/model-manifest.schema.json
      arrays/e0000/mean.npy  one folder per entry, one .npy per named array
      arrays/e0001/...

``manifest.json`` holds::

    {"format": "actstats-models", "format_version": 1,
     "provenance": {"store", "model", "weights", "weights_sha256", "layers",
                    "preprocessing", "class_names", "actstats_version", "fit"},
     "classes": [class keys], "layers": [layer names, shallow -> deep],
     "entries": [{"class": key, "layer": name or "A|B", "kind": "gaussian"|"mixture"|"joint",
                  "params": {...},
                  "arrays": {name: {"file", "shape", "dtype", "sha256"}}}]}

``MODELS`` is a local path or any fsspec URL (``file://``, ``memory://``,
``s3://`` ... with that backend installed); files are read and written
through fsspec, whole, so a remote directory needs no local copy.

Loading validates the manifest with ``jsonschema``, checks each file's sha256,
shape and dtype, and reads it with ``np.load(allow_pickle=False)``: nothing is
ever unpickled. Any mismatch raises :class:`~actstats.errors.ActstatsError`
naming the file. This module does file I/O only; models turn themselves into
``(params, arrays)`` and back. :func:`save_models` and :func:`load_models` convert a
:class:`~actstats.stats.modelset.ModelSet` to and from that directory.

A model directory is a file an attacker may hand over, so a local one is read
defensively: every entry must be a regular file inside the directory reached
without symlinks (no ``/dev/zero``, no FIFO), no larger than its manifest
entry allows; a ``.npy`` header must agree with the manifest and the file
length before ``np.load`` allocates anything; a manifest over
:data:`MAX_MANIFEST_BYTES` or nested deeper than :data:`MAX_MANIFEST_DEPTH` is
refused.

Writing is atomic on local disks: the directory is written to a temporary
sibling and renamed into place, so a killed ``fit --overwrite`` leaves the old
models intact. ``--overwrite`` replaces only a directory that holds nothing
but a valid manifest and ``arrays/`` (a user's ``thesis.tex`` beside a
``manifest.json`` keeps the folder from being deleted).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import posixpath
import uuid
from pathlib import Path
from typing import Any

import fsspec
import jsonschema
import numpy as np
from fsspec import AbstractFileSystem
from fsspec.implementations.local import LocalFileSystem

from actstats.errors import ActstatsError
from actstats.io.locks import writer_lock
from actstats.io.paths import is_local, local_path, read_regular_file
from actstats.resources import schema_path, validate_json
from actstats.stats.modelset import KINDS, ClassModels, ModelSet

__all__ = [
    "MANIFEST",
    "MAX_MANIFEST_BYTES",
    "MAX_MANIFEST_DEPTH",
    "SCHEMA_PATH",
    "check_model_output",
    "load_models",
    "read_model_dir",
    "save_models",
    "write_model_dir",
]

MANIFEST = "manifest.json"
SCHEMA_PATH = schema_path("model-manifest.schema.json")
_DTYPES = {"<f8", "<f4", "<f2", "<i8", "<i4", "|b1"}
#: Largest manifest read (1000 classes x 20 layers of entries is ~40 MB).
MAX_MANIFEST_BYTES = 256 * 2**20
#: Deepest nesting of lists/objects accepted in a manifest (a real one is < 10).
MAX_MANIFEST_DEPTH = 32
#: Room for a .npy header beyond the array's bytes (format 2.0 allows 4 GB, numpy writes < 1 KB).
_NPY_HEADER_MAX = 2**16
#: What ``--overwrite`` may remove: nothing but what :func:`write_model_dir` writes.
_OWN_ENTRIES = {MANIFEST, "arrays"}
_TMP, _OLD = "actstats-tmp", "actstats-old"


def _filesystem(path: str | os.PathLike) -> tuple[AbstractFileSystem, str]:
    """The fsspec filesystem of ``path`` and the path inside it (``/``-separated)."""
    return fsspec.core.url_to_fs(os.fspath(path))


def write_model_dir(
    path: str | os.PathLike,
    *,
    provenance: dict[str, Any],
    classes: list[str],
    layers: list[str],
    entries: list[dict[str, Any]],
    overwrite: bool = False,
) -> Path | str:
    """Write a model directory.

    Parameters
    ----------
    path : path-like or str
        Directory to create: a local path or an fsspec URL.
    provenance : dict
        JSON-able provenance (see module docstring).
    classes, layers : list of str
    entries : list of dict
        Each ``{"class", "layer", "kind", "params", "arrays": {name: ndarray}}``.
    overwrite : bool
        Replace an existing directory (only one that holds a manifest).

    Returns
    -------
    The directory: a ``Path`` when local, else the URL as given.
    """
    with writer_lock(path, "model directory"):
        return _write_locked(path, provenance, classes, layers, entries, overwrite)


def _write_locked(
    path: str | os.PathLike,
    provenance: dict[str, Any],
    classes: list[str],
    layers: list[str],
    entries: list[dict[str, Any]],
    overwrite: bool,
) -> Path | str:
    fs, root = _filesystem(path)
    if is_local(path):
        _recover(local_path(path))
    replace = _check_replaceable(fs, root, os.fspath(path), overwrite)
    if not is_local(path):  # object stores: in place, manifest last
        if replace:
            fs.rm(root, recursive=True)
        _write_files(fs, root, provenance, classes, layers, entries)
        return os.fspath(path)
    final = local_path(path)
    tmp = final.with_name(f".{final.name}.{_TMP}-{uuid.uuid4().hex[:8]}")
    try:
        _write_files(fs, str(tmp), provenance, classes, layers, entries)
        _swap_into_place(tmp, final, replace)
    except BaseException:
        if tmp.exists():
            fs.rm(str(tmp), recursive=True)
        raise
    return os.fspath(path) if "://" in os.fspath(path) else Path(path)


def check_model_output(path: str | os.PathLike, overwrite: bool) -> None:
    """Raise unless :func:`write_model_dir` may write ``path`` (checked before a long fit,
    with the directory's writer lock held)."""
    fs, root = _filesystem(path)
    if is_local(path):
        _recover(local_path(path))
    _check_replaceable(fs, root, os.fspath(path), overwrite)


def _check_replaceable(fs: AbstractFileSystem, root: str, shown: str, overwrite: bool) -> bool:
    """Whether ``root`` exists and may be replaced; raise if it may not."""
    if not fs.exists(root):
        return False
    if fs.isdir(root) and not fs.ls(root):
        return True  # an empty folder
    if not overwrite:
        raise ActstatsError(f"{shown} exists; pass --overwrite to replace it")
    foreign = sorted(
        posixpath.basename(p.rstrip("/"))
        for p in (fs.ls(root, detail=False) if fs.isdir(root) else [root])
    )
    foreign = [name for name in foreign if name not in _OWN_ENTRIES]
    try:
        _read_manifest(fs, root, shown)
    except ActstatsError:
        foreign = foreign or [MANIFEST]
    if foreign:
        raise ActstatsError(
            f"{shown} is not (only) an actstats model directory (holds {', '.join(foreign[:3])}); "
            "refusing to replace it: choose another -o"
        )
    return True


def _recover(final: Path) -> None:
    """Undo what a killed write of ``final`` left (its lock held).

    Killed between moving the old directory aside and the new one in: the old
    one goes back. Temporary copies are removed, and an old copy once the new
    one is in place.
    """
    olds = sorted(final.parent.glob(f".{final.name}.{_OLD}-*"), key=os.path.getmtime)
    if olds and not os.path.lexists(final):
        os.replace(olds.pop(), final)
    for leftover in [*final.parent.glob(f".{final.name}.{_TMP}-*"), *olds]:
        fsspec.filesystem("file").rm(str(leftover), recursive=True)


def _swap_into_place(tmp: Path, final: Path, replace: bool) -> None:
    """Rename ``tmp`` to ``final``; an old ``final`` is renamed aside first, then removed."""
    old = final.with_name(f".{final.name}.{_OLD}-{uuid.uuid4().hex[:8]}")
    if replace:
        os.replace(final, old)
    os.replace(tmp, final)
    if replace:
        fsspec.filesystem("file").rm(str(old), recursive=True)


def _write_files(
    fs: AbstractFileSystem,
    root: str,
    provenance: dict[str, Any],
    classes: list[str],
    layers: list[str],
    entries: list[dict[str, Any]],
) -> None:
    """Write the arrays, then the manifest, under ``root``."""
    fs.makedirs(f"{root}/arrays", exist_ok=True)
    out_entries = []
    for i, entry in enumerate(entries):
        meta = {}
        for name, arr in entry["arrays"].items():
            arr = np.ascontiguousarray(arr)
            if arr.dtype.str not in _DTYPES:
                raise ActstatsError(f"array {name!r} has unsupported dtype {arr.dtype}")
            rel = f"arrays/e{i:04d}/{name}.npy"
            buffer = io.BytesIO()
            np.save(buffer, arr, allow_pickle=False)
            data = buffer.getvalue()
            fs.makedirs(f"{root}/arrays/e{i:04d}", exist_ok=True)
            fs.pipe_file(f"{root}/{rel}", data)
            meta[name] = {
                "file": rel,
                "shape": list(arr.shape),
                "dtype": arr.dtype.str,
                "sha256": hashlib.sha256(data).hexdigest(),
            }
        out_entries.append(
            {
                **{k: entry[k] for k in ("class", "layer", "kind")},
                "params": entry["params"],
                "arrays": meta,
            }
        )
    manifest = {
        "format": "actstats-models",
        "format_version": 1,
        "provenance": provenance,
        "classes": list(classes),
        "layers": list(layers),
        "entries": out_entries,
    }
    # the manifest goes last: a directory without one is an unfinished write
    fs.pipe_file(
        f"{root}/{MANIFEST}", json.dumps(manifest, indent=1, default=_json_default).encode()
    )


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)


def _read_manifest(fs: AbstractFileSystem, root: str, path: str) -> dict[str, Any]:
    mpath = f"{path.rstrip('/')}/{MANIFEST}"
    if not fs.isdir(root):
        raise ActstatsError(f"{path} is not a model directory; run `actstats fit STORE -o {path}`")
    if not fs.isfile(f"{root}/{MANIFEST}"):
        raise ActstatsError(f"{mpath} is missing; this is not a complete actstats model directory")
    data = _read_file(fs, root, MANIFEST, MAX_MANIFEST_BYTES)
    try:
        manifest = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ActstatsError(f"{mpath} is not valid JSON ({exc}); refit the models") from None
    except RecursionError:
        manifest = None
    if manifest is None or _depth(manifest) > MAX_MANIFEST_DEPTH:
        raise ActstatsError(
            f"{mpath}: nested deeper than {MAX_MANIFEST_DEPTH} levels; refused (not a manifest "
            "actstats wrote)"
        )
    try:
        validate_json(manifest, SCHEMA_PATH.name)
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "(top level)"
        raise ActstatsError(
            f"{mpath}: field {where} fails the manifest schema: {exc.message}"
        ) from None
    return manifest


def _depth(value: Any) -> int:
    """Nesting depth of lists/dicts in ``value``, without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            if level <= MAX_MANIFEST_DEPTH:
                children = item.values() if isinstance(item, dict) else item
                stack.extend((child, level + 1) for child in children)
    return deepest


def _read_file(fs: AbstractFileSystem, root: str, rel: str, max_bytes: int) -> bytes:
    """A file of the model directory: defensively when local (see the module docstring)."""
    if isinstance(fs, LocalFileSystem):
        return read_regular_file(Path(root), rel, max_bytes)
    if fs.size(f"{root}/{rel}") > max_bytes:
        raise ActstatsError(f"{root}/{rel}: larger than the {max_bytes:,} bytes allowed; refused")
    return fs.cat_file(f"{root}/{rel}")


def _expected_bytes(meta: dict[str, Any]) -> int:
    return math.prod(int(d) for d in meta["shape"]) * np.dtype(meta["dtype"]).itemsize


def _check_npy_header(data: bytes, meta: dict[str, Any]) -> None:
    """Compare the .npy header with the manifest and the data length before any allocation."""
    buffer = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(buffer)
        reader = {
            (1, 0): np.lib.format.read_array_header_1_0,
            (2, 0): np.lib.format.read_array_header_2_0,
        }.get(version)
        if reader is None:
            raise ValueError(f"unsupported .npy version {version}")
        shape, _, dtype = reader(buffer)
    except ValueError as exc:
        raise ActstatsError(
            f"array file {meta['file']} cannot be read: bad .npy header ({exc})"
        ) from None
    if dtype.hasobject:
        raise ActstatsError(f"array file {meta['file']} holds Python objects (pickle); refused")
    claimed = math.prod(shape) * dtype.itemsize
    if list(shape) != list(meta["shape"]):
        raise ActstatsError(
            f"array file {meta['file']} has shape {list(shape)}; the manifest says {meta['shape']}"
        )
    if dtype.str != meta["dtype"]:
        raise ActstatsError(
            f"array file {meta['file']} has dtype {dtype.str}; the manifest says {meta['dtype']}"
        )
    if len(data) - buffer.tell() != claimed:
        raise ActstatsError(
            f"array file {meta['file']}: {len(data) - buffer.tell():,} data bytes for a header "
            f"claiming {claimed:,}; refused"
        )


def _load_array(fs: AbstractFileSystem, root: str, path: str, meta: dict[str, Any]) -> np.ndarray:
    file = posixpath.normpath(posixpath.join(root, meta["file"]))
    if not file.startswith(root.rstrip("/") + "/"):
        raise ActstatsError(f"{path}/{MANIFEST}: array file {meta['file']} lies outside the model")
    if meta["dtype"] not in _DTYPES:
        raise ActstatsError(f"{path}/{MANIFEST}: array {meta['file']} has dtype {meta['dtype']}")
    try:
        data = _read_file(
            fs, root, posixpath.relpath(file, root), _expected_bytes(meta) + _NPY_HEADER_MAX
        )
    except FileNotFoundError:
        raise ActstatsError(
            f"array file {meta['file']} is missing from {path}; refit the models"
        ) from None
    if hashlib.sha256(data).hexdigest() != meta["sha256"]:
        raise ActstatsError(
            f"array file {meta['file']} does not match its sha256 in the manifest "
            "(changed or corrupt); refit the models"
        )
    _check_npy_header(data, meta)
    try:
        arr = np.load(io.BytesIO(data), allow_pickle=False)
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise ActstatsError(
                f"array file {meta['file']} holds Python objects (pickle); refused"
            ) from None
        raise ActstatsError(f"array file {meta['file']} cannot be read: {exc}") from None
    except (OSError, EOFError) as exc:
        raise ActstatsError(f"array file {meta['file']} cannot be read: {exc}") from None
    if not isinstance(arr, np.ndarray):
        raise ActstatsError(f"array file {meta['file']} is not a single .npy array; refused")
    return arr


def read_model_dir(path: str | os.PathLike) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Read and verify a model directory (local path or fsspec URL) from :func:`write_model_dir`.

    Returns
    -------
    manifest : dict
        The validated manifest.
    entries : list of dict
        ``{"class", "layer", "kind", "params", "arrays": {name: ndarray}}`` per entry.

    Raises
    ------
    ActstatsError
        Missing/invalid manifest, schema violation, missing file, sha256/shape/dtype
        mismatch, or an object (pickle) array.
    """
    fs, root = _filesystem(path)
    shown = os.fspath(path)
    manifest = _read_manifest(fs, root, shown)
    entries = []
    for entry in manifest["entries"]:
        arrays = {n: _load_array(fs, root, shown, m) for n, m in entry["arrays"].items()}
        entries.append({**entry, "arrays": arrays})
    return manifest, entries


def save_models(
    models: ModelSet, path: str | os.PathLike, *, overwrite: bool = False
) -> Path | str:
    """Write ``models`` to a local or fsspec-URL directory (layout in the module docstring)."""
    entries: list[dict[str, Any]] = []
    for key in models.classes:
        cm = models[key]
        items = [(ly, m) for ly, m in cm.gaussians.items()]
        items += [(ly, m) for ly, m in cm.mixtures.items()]
        items += [(f"{a}|{b}", m) for (a, b), m in cm.joints.items()]
        for layer, model in items:
            params, arrays = model.to_state()
            entries.append(
                {
                    "class": key,
                    "layer": layer,
                    "kind": model.kind,
                    "params": params,
                    "arrays": arrays,
                }
            )
    return write_model_dir(
        path,
        provenance=models.provenance,
        classes=models.classes,
        layers=models.layers,
        entries=entries,
        overwrite=overwrite,
    )


def load_models(path: str | os.PathLike) -> ModelSet:
    """Load a model directory (local path or fsspec URL) written by ``actstats fit``.

    The manifest is schema-checked and every array's sha256, shape and dtype verified;
    nothing is unpickled. Raises :class:`~actstats.errors.ActstatsError` on any problem.
    """
    manifest, entries = read_model_dir(path)
    parts: dict[str, dict[str, dict]] = {
        c: {"gaussian": {}, "mixture": {}, "joint": {}} for c in manifest["classes"]
    }
    for e in entries:
        if e["class"] not in parts:
            raise ActstatsError(f"{path}: entry for unknown class {e['class']!r} in manifest")
        try:
            model = KINDS[e["kind"]].from_state(e["params"], e["arrays"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ActstatsError(
                f"{path}: {e['kind']} entry {e['class']}/{e['layer']} is incomplete ({exc})"
            ) from None
        key = tuple(e["layer"].split("|")) if e["kind"] == "joint" else e["layer"]
        parts[e["class"]][e["kind"]][key] = model
    classes = {
        c: ClassModels(c, manifest["layers"], p["gaussian"], p["mixture"], p["joint"])
        for c, p in parts.items()
    }
    return ModelSet(classes, manifest["layers"], manifest["provenance"])
