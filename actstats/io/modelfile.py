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
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import posixpath
from pathlib import Path
from typing import Any

import fsspec
import jsonschema
import numpy as np
from fsspec import AbstractFileSystem

from actstats.errors import ActstatsError
from actstats.resources import schema_path
from actstats.stats.modelset import KINDS, ClassModels, ModelSet

__all__ = [
    "MANIFEST",
    "SCHEMA_PATH",
    "load_models",
    "read_model_dir",
    "save_models",
    "write_model_dir",
]

MANIFEST = "manifest.json"
SCHEMA_PATH = schema_path("model-manifest.schema.json")
_DTYPES = {"<f8", "<f4", "<f2", "<i8", "<i4", "|b1"}


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
    fs, root = _filesystem(path)
    if fs.exists(root):
        if not overwrite:
            raise ActstatsError(f"{path} exists; pass --overwrite to replace it")
        if not fs.isfile(f"{root}/{MANIFEST}"):
            raise ActstatsError(f"{path} exists and is not an actstats model directory; refusing")
        fs.rm(root, recursive=True)
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
    return path if "://" in os.fspath(path) else Path(path)


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
    try:
        manifest = json.loads(fs.cat_file(f"{root}/{MANIFEST}"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ActstatsError(f"{mpath} is not valid JSON ({exc}); refit the models") from None
    schema = json.loads(SCHEMA_PATH.read_text())
    try:
        jsonschema.validate(manifest, schema)
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "(top level)"
        raise ActstatsError(
            f"{mpath}: field {where} fails the manifest schema: {exc.message}"
        ) from None
    return manifest


def _load_array(fs: AbstractFileSystem, root: str, path: str, meta: dict[str, Any]) -> np.ndarray:
    file = posixpath.normpath(posixpath.join(root, meta["file"]))
    if not file.startswith(root.rstrip("/") + "/"):
        raise ActstatsError(f"{path}/{MANIFEST}: array file {meta['file']} lies outside the model")
    try:
        data = fs.cat_file(file)
    except FileNotFoundError:
        raise ActstatsError(
            f"array file {meta['file']} is missing from {path}; refit the models"
        ) from None
    if hashlib.sha256(data).hexdigest() != meta["sha256"]:
        raise ActstatsError(
            f"array file {meta['file']} does not match its sha256 in the manifest "
            "(changed or corrupt); refit the models"
        )
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
    if list(arr.shape) != list(meta["shape"]):
        raise ActstatsError(
            f"array file {meta['file']} has shape {list(arr.shape)}; the manifest says "
            f"{meta['shape']}"
        )
    if arr.dtype.str != meta["dtype"]:
        raise ActstatsError(
            f"array file {meta['file']} has dtype {arr.dtype.str}; the manifest says "
            f"{meta['dtype']}"
        )
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
