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

Loading validates the manifest with ``jsonschema``, checks each file's sha256,
shape and dtype, and reads it with ``np.load(allow_pickle=False)``: nothing is
ever unpickled. Any mismatch raises :class:`~actstats.errors.ActstatsError`
naming the file. This module does file I/O only; models turn themselves into
``(params, arrays)`` and back.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np

import actstats
from actstats.errors import ActstatsError

__all__ = ["MANIFEST", "SCHEMA_PATH", "read_model_dir", "write_model_dir"]

MANIFEST = "manifest.json"
SCHEMA_PATH = (
    Path(actstats.__file__).resolve().parents[1] / "schemas" / "model-manifest.schema.json"
)
_DTYPES = {"<f8", "<f4", "<f2", "<i8", "<i4", "|b1"}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_model_dir(
    path: str | os.PathLike,
    *,
    provenance: dict[str, Any],
    classes: list[str],
    layers: list[str],
    entries: list[dict[str, Any]],
    overwrite: bool = False,
) -> Path:
    """Write a model directory.

    Parameters
    ----------
    path : path-like
        Directory to create.
    provenance : dict
        JSON-able provenance (see module docstring).
    classes, layers : list of str
    entries : list of dict
        Each ``{"class", "layer", "kind", "params", "arrays": {name: ndarray}}``.
    overwrite : bool
        Replace an existing directory (only one that holds a manifest).

    Returns
    -------
    Path of the directory.
    """
    path = Path(path)
    if path.exists():
        if not overwrite:
            raise ActstatsError(f"{path} exists; pass --overwrite to replace it")
        if not (path / MANIFEST).is_file():
            raise ActstatsError(f"{path} exists and is not an actstats model directory; refusing")
        shutil.rmtree(path)
    (path / "arrays").mkdir(parents=True)
    out_entries = []
    for i, entry in enumerate(entries):
        folder = path / "arrays" / f"e{i:04d}"
        folder.mkdir()
        meta = {}
        for name, arr in entry["arrays"].items():
            arr = np.ascontiguousarray(arr)
            if arr.dtype.str not in _DTYPES:
                raise ActstatsError(f"array {name!r} has unsupported dtype {arr.dtype}")
            rel = f"arrays/e{i:04d}/{name}.npy"
            np.save(path / rel, arr, allow_pickle=False)
            meta[name] = {
                "file": rel,
                "shape": list(arr.shape),
                "dtype": arr.dtype.str,
                "sha256": _sha256(path / rel),
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
    tmp = path / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1, default=_json_default))
    tmp.replace(path / MANIFEST)
    return path


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)


def _read_manifest(path: Path) -> dict[str, Any]:
    mpath = path / MANIFEST
    if not path.is_dir():
        raise ActstatsError(f"{path} is not a model directory; run `actstats fit STORE -o {path}`")
    if not mpath.is_file():
        raise ActstatsError(f"{mpath} is missing; this is not a complete actstats model directory")
    try:
        manifest = json.loads(mpath.read_text())
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


def _load_array(root: Path, name: str, meta: dict[str, Any]) -> np.ndarray:
    file = (root / meta["file"]).resolve()
    if root.resolve() not in file.parents:
        raise ActstatsError(f"{root / MANIFEST}: array file {meta['file']} lies outside the model")
    if not file.is_file():
        raise ActstatsError(f"array file {meta['file']} is missing from {root}; refit the models")
    if _sha256(file) != meta["sha256"]:
        raise ActstatsError(
            f"array file {meta['file']} does not match its sha256 in the manifest "
            "(changed or corrupt); refit the models"
        )
    try:
        arr = np.load(file, allow_pickle=False, mmap_mode=None)
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
    """Read and verify a model directory written by :func:`write_model_dir`.

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
    root = Path(path)
    manifest = _read_manifest(root)
    entries = []
    for entry in manifest["entries"]:
        arrays = {n: _load_array(root, n, m) for n, m in entry["arrays"].items()}
        entries.append({**entry, "arrays": arrays})
    return manifest, entries
