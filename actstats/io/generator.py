"""Generator files: a directory of safetensors plus a JSON manifest, and its training checkpoint.

Layout::

    GEN/
      manifest.json            schemas/generator-manifest.schema.json (written last)
      generator.safetensors    the decoder's tensors (weights, code mean and std)
      checkpoint/              only while training: state.safetensors + checkpoint.json
                               (schemas/generator-checkpoint.schema.json)

The same safety rules as model files: the manifest is validated with
``jsonschema`` (which admits one architecture, by version, and no field that
names code), the tensor file must match the sha256 and size the manifest
records, it is read with ``safetensors`` (tensors only, never unpickled), and
every tensor must have the name and shape the architecture expects. Anything
else raises :class:`~actstats.errors.ActstatsError` naming the file. Files are
written under temporary names and renamed; the manifest goes last, so a
directory without one is an unfinished run (which ``train-generator`` resumes).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import jsonschema
import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from actstats.errors import ActstatsError
from actstats.io.paths import write_atomic
from actstats.resources import validate_json
from actstats.synth.generator import ARCHITECTURE, GeneratorArch, UpConvGenerator

__all__ = [
    "MANIFEST",
    "clear_generator_dir",
    "read_checkpoint",
    "read_generator",
    "write_checkpoint",
    "write_generator",
]

MANIFEST = "manifest.json"
TENSORS = "generator.safetensors"
CHECKPOINT = "checkpoint"
_CHECKPOINT_JSON = "checkpoint.json"
_OURS = (MANIFEST, TENSORS, CHECKPOINT)


def _tensor_record(file: str, data: bytes) -> dict[str, Any]:
    return {"file": file, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


def _validate(doc: Any, schema: str, where: Path) -> None:
    try:
        validate_json(doc, schema)
    except jsonschema.ValidationError as exc:
        field = "/".join(str(p) for p in exc.absolute_path) or "(top level)"
        raise ActstatsError(
            f"{where}: field {field} fails {schema}: {exc.message}; retrain the generator"
        ) from None


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ActstatsError(f"{path} is not valid JSON ({exc}); retrain the generator") from None


def _read_tensors(folder: Path, record: dict[str, Any], where: Path) -> dict[str, torch.Tensor]:
    """The verified tensors of ``record`` (sha256, size, then safetensors' own checks)."""
    path = folder / record["file"]
    if not path.is_file():
        raise ActstatsError(f"{path} is missing; retrain the generator")
    data = path.read_bytes()
    if len(data) != record["bytes"] or hashlib.sha256(data).hexdigest() != record["sha256"]:
        raise ActstatsError(
            f"{path} does not match the size/sha256 in {where.name} (truncated or changed); "
            "retrain the generator"
        )
    try:
        return load_safetensors(data)
    except (SafetensorError, ValueError) as exc:
        raise ActstatsError(f"{path} is not a safetensors file ({exc}); refused") from None


# ------------------------------------------------------------------ generator
def clear_generator_dir(path: str | os.PathLike, *, overwrite: bool) -> Path:
    """Prepare ``path`` for training: with ``overwrite`` clear it, else refuse a finished one.

    Without ``overwrite`` an unfinished run's checkpoint stays, to be resumed.
    Only files this module writes are ever removed; a directory holding
    anything else is refused.
    """
    folder = Path(path)
    if not folder.exists():
        return folder
    if not folder.is_dir():
        raise ActstatsError(f"-o {folder}: exists and is not a directory; choose another path")
    foreign = [
        p.name for p in folder.iterdir() if p.name not in _OURS and not p.name.startswith(".")
    ]
    if foreign:
        raise ActstatsError(
            f"-o {folder}: holds files actstats did not write ({', '.join(sorted(foreign)[:5])}); "
            "choose an empty or new folder"
        )
    if (folder / MANIFEST).exists() and not overwrite:
        raise ActstatsError(f"-o {folder}: a trained generator exists; pass --overwrite")
    if overwrite:
        for name in _OURS:
            target = folder / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    return folder


def write_generator(
    path: str | os.PathLike, generator: UpConvGenerator, meta: dict[str, Any]
) -> Path:
    """Write ``generator`` and its manifest (``meta`` holds every other manifest field)."""
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in generator.state_dict().items()}
    data = save_safetensors(tensors)
    write_atomic(folder / TENSORS, data)
    manifest = {
        "format": "actstats-generator",
        "format_version": 1,
        "architecture": ARCHITECTURE,
        "arch": generator.arch.to_dict(),
        **meta,
        "tensors": _tensor_record(TENSORS, data),
    }
    _validate(manifest, "generator-manifest.schema.json", folder / MANIFEST)
    write_atomic(folder / MANIFEST, json.dumps(manifest, indent=1).encode())
    if (folder / CHECKPOINT).is_dir():
        shutil.rmtree(folder / CHECKPOINT)
    return folder


def read_generator(path: str | os.PathLike) -> tuple[UpConvGenerator, dict[str, Any]]:
    """Load and verify a generator directory; returns the decoder (CPU, eval) and its manifest."""
    folder = Path(path)
    mpath = folder / MANIFEST
    if not mpath.is_file():
        hint = (
            "training is unfinished; rerun train-generator to resume"
            if (folder / CHECKPOINT).is_dir()
            else "train one with `actstats train-generator STORE --layer L -o GEN`"
        )
        raise ActstatsError(f"--generator {folder}: no {MANIFEST}; {hint}")
    manifest = _read_json(mpath)
    _validate(manifest, "generator-manifest.schema.json", mpath)
    tensors = _read_tensors(folder, manifest["tensors"], mpath)
    generator = UpConvGenerator(GeneratorArch(**manifest["arch"]))
    expected = {k: tuple(v.shape) for k, v in generator.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in tensors.items()}
    if found != expected:
        wrong = sorted(set(found) ^ set(expected)) or sorted(
            k for k in expected if found[k] != expected[k]
        )
        raise ActstatsError(
            f"{folder / TENSORS}: tensors do not fit the manifest's architecture "
            f"({', '.join(wrong[:4])}); retrain the generator"
        )
    generator.load_state_dict(tensors)
    return generator.eval().requires_grad_(False), manifest


# ------------------------------------------------------------------ checkpoint
def write_checkpoint(
    path: str | os.PathLike, tensors: dict[str, torch.Tensor], info: dict[str, Any]
) -> None:
    """Save the training state after an epoch (``info``: epoch, resume_key, history, seconds)."""
    folder = Path(path) / CHECKPOINT
    folder.mkdir(parents=True, exist_ok=True)
    data = save_safetensors(tensors)
    name = f"state-{int(info['epoch']):05d}.safetensors"
    record = {
        "format": "actstats-generator-checkpoint",
        **info,
        "tensors": _tensor_record(name, data),
    }
    _validate(record, "generator-checkpoint.schema.json", folder / _CHECKPOINT_JSON)
    # a new state file, then the record that points at it, then the old state goes:
    # a run killed at any moment leaves a record and the state it names
    write_atomic(folder / name, data)
    write_atomic(folder / _CHECKPOINT_JSON, json.dumps(record, indent=1).encode())
    for old in folder.glob("state-*.safetensors"):
        if old.name != name:
            old.unlink()


def read_checkpoint(
    path: str | os.PathLike,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """The verified checkpoint of an unfinished run, or None when there is none."""
    folder = Path(path) / CHECKPOINT
    jpath = folder / _CHECKPOINT_JSON
    if not jpath.is_file():
        return None
    info = _read_json(jpath)
    _validate(info, "generator-checkpoint.schema.json", jpath)
    return _read_tensors(folder, info["tensors"], jpath), info
