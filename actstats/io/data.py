"""Class folders: discovery, decoding, and naming what is wrong with a bad file.

A data set is ``ROOT/<class>/<file>`` (the ImageNet layout). Discovery lists
every non-hidden entry of every class folder, image or not, so that a stray
``notes.txt`` or a broken symlink is reported instead of silently ignored.
Decoding either returns an RGB image or raises :class:`BadImageError` with one of
the :data:`REASONS`; the collect pipeline records the reason and goes on.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from actstats.errors import ActstatsError

__all__ = [
    "REASONS",
    "BadImageError",
    "Dataset",
    "decode_jpegs",
    "discover",
    "jpeg_bytes",
    "load_image",
    "read_class_list",
]

#: Why a file or folder was skipped; the values stored in ``errors/reason``.
REASONS = (
    "empty class folder",
    "empty file",
    "broken symlink",
    "unreadable",
    "not an image",
    "truncated",
    "corrupt",
    "decompression bomb",
)


class BadImageError(Exception):
    """A file that cannot be used; ``reason`` is one of :data:`REASONS`."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass(frozen=True)
class Dataset:
    """The files of a run, sorted by class then name.

    ``paths`` are relative to ``root`` with ``/`` separators, so a store does
    not depend on where the data set is mounted. ``empty_classes`` are folders
    that held no files; they are not in ``class_names``.
    """

    root: Path
    class_names: list[str]
    paths: list[str]
    labels: np.ndarray
    empty_classes: list[str]

    def absolute(self, index: int) -> Path:
        """The file behind ``paths[index]``."""
        return self.root / self.paths[index]


def read_class_list(spec: str | Sequence[str] | None) -> list[str] | None:
    """``--classes``: a comma-separated list, a list, or a file with one name per line.

    Lines starting with ``#`` and blank lines in a file are ignored.
    """
    if spec is None:
        return None
    if isinstance(spec, str):
        path = Path(spec)
        if path.is_file():
            lines = path.read_text().splitlines()
            return [s.strip() for s in lines if s.strip() and not s.lstrip().startswith("#")]
        return [s.strip() for s in spec.split(",") if s.strip()]
    return [str(s) for s in spec]


def discover(
    root: str | Path, *, classes: Sequence[str] | None = None, per_class: int | None = None
) -> Dataset:
    """List ``root/<class>/*`` in a deterministic order.

    Classes are sorted by folder name whatever order ``classes`` gives, so that
    label indices agree with the sorted-wnid order of ImageNet-1k. ``per_class``
    keeps the first N entries of each folder in name order.
    """
    root = Path(root)
    if not root.is_dir():
        raise ActstatsError(f"ROOT {root}: no such directory; expected ROOT/<class>/<images>")
    folders = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise ActstatsError(f"ROOT {root}: no class folders; expected ROOT/<class>/<images>")
    if classes is not None:
        unknown = [c for c in classes if c not in folders]
        if unknown:
            raise ActstatsError(
                f"--classes: unknown class {unknown[0]!r} in {root}; valid: {_preview(folders)}"
            )
        folders = sorted(set(classes))
    if per_class is not None and per_class < 1:
        raise ActstatsError(f"--per-class {per_class}: must be at least 1")
    class_names, paths, labels, empty = [], [], [], []
    for folder in folders:
        entries = sorted(
            e.name
            for e in os.scandir(root / folder)
            if not e.name.startswith(".") and not e.is_dir()
        )
        if not entries:
            empty.append(folder)
            continue
        label = len(class_names)
        class_names.append(folder)
        for name in entries[:per_class]:
            paths.append(f"{folder}/{name}")
            labels.append(label)
    if not paths:
        raise ActstatsError(f"ROOT {root}: every class folder is empty")
    return Dataset(root, class_names, paths, np.asarray(labels, dtype=np.int32), empty)


def load_image(path: str | Path) -> Image.Image:
    """Decode ``path`` fully into an 8-bit RGB image, or raise :class:`BadImageError`.

    Conversions are explicit because ``Image.convert("RGB")`` gets some wrong:
    16-bit grayscale is scaled (not clipped) to 8 bits, transparent pixels
    are composited over white (not dropped to their hidden colour), and EXIF
    orientation is applied. Images over ``PIL.Image.MAX_IMAGE_PIXELS`` count
    as decompression bombs (PIL only warns below twice that).
    """
    path = Path(path)
    if path.is_symlink() and not path.exists():
        raise BadImageError("broken symlink", str(path))
    try:
        if path.stat().st_size == 0:
            raise BadImageError("empty file", str(path))
        with open(path, "rb") as fh:
            return _decode(fh, path)
    except BadImageError:
        raise
    except PermissionError as exc:
        raise BadImageError("unreadable", str(exc)) from None
    except Image.DecompressionBombError as exc:
        raise BadImageError("decompression bomb", str(exc)) from None
    except UnidentifiedImageError as exc:
        raise BadImageError("not an image", str(exc)) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        reason = "truncated" if "truncated" in str(exc).lower() else "corrupt"
        raise BadImageError(reason, f"{path}: {exc}") from None


def _decode(fh: object, path: Path) -> Image.Image:
    with Image.open(fh) as im:  # type: ignore[arg-type]
        limit = Image.MAX_IMAGE_PIXELS
        if limit is not None and im.width * im.height > limit:
            raise BadImageError(
                "decompression bomb", f"{path}: {im.width}x{im.height} pixels > {limit}"
            )
        im.load()
        im = ImageOps.exif_transpose(im)
        return _to_rgb(im)


def _to_rgb(im: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit RGB (see :func:`load_image` for why not ``convert``)."""
    if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        pixels = np.asarray(im, dtype=np.float64) / 257.0  # 0..65535 -> 0..255
        im = Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), mode="L")
    elif im.mode == "F":
        im = Image.fromarray(np.clip(np.rint(np.asarray(im)), 0, 255).astype(np.uint8), mode="L")
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    if im.mode in ("LA", "La", "PA", "RGBa"):
        im = im.convert("RGBA")
    if im.mode == "RGBA":
        background = Image.new("RGBA", im.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, im).convert("RGB")
    return im.convert("RGB") if im.mode != "RGB" else im


# ------------------------------------------------------- tensor (nvjpeg) decoding
_EXIF_ORIENTATION = 0x0112
# torchvision 0.29 deprecates its decoders in favour of TorchCodec; they still work
warnings.filterwarnings(
    "ignore", message="The image decoding and encoding", category=DeprecationWarning
)


def jpeg_bytes(path: str | Path) -> torch.Tensor | None:
    """The bytes of ``path`` as a uint8 tensor when ``decode_jpegs`` decodes it as PIL would.

    That is a complete (ends with the EOI marker) baseline/progressive JPEG in
    RGB or grayscale, without an EXIF rotation, within ``MAX_IMAGE_PIXELS``;
    anything else -- and any file that cannot be read or parsed -- gives
    ``None``, and the caller takes the PIL path (:func:`load_image`), which
    classifies bad files. Only the header is parsed here (cheap).
    """
    try:
        data = Path(path).read_bytes()
        if len(data) < 4 or data[:3] != b"\xff\xd8\xff" or data[-2:] != b"\xff\xd9":
            return None
        with Image.open(io.BytesIO(data)) as im:
            limit = Image.MAX_IMAGE_PIXELS
            if (
                im.format != "JPEG"
                or im.mode not in ("RGB", "L")
                or (limit is not None and im.width * im.height > limit)
                or im.getexif().get(_EXIF_ORIENTATION, 1) != 1
            ):
                return None
    except Exception:  # the PIL path names what is wrong
        return None
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


def decode_jpegs(datas: list[torch.Tensor], device: torch.device | str) -> list[torch.Tensor]:
    """Decode JPEG byte tensors (from :func:`jpeg_bytes`) to (3, H, W) uint8 RGB on ``device``.

    Batched ``torchvision.io.decode_jpeg`` (nvjpeg on CUDA, libjpeg-turbo on
    CPU); raises on any bad file, so callers fall back per file.
    """
    from torchvision.io import ImageReadMode, decode_jpeg

    if not datas:
        return []
    device = torch.device(device)
    if device.type == "cuda":
        out = decode_jpeg(datas, mode=ImageReadMode.RGB, device=device)
    else:
        out = [decode_jpeg(d, mode=ImageReadMode.RGB) for d in datas]
    return list(out)


def _preview(names: Sequence[str], n: int = 10) -> str:
    shown = ", ".join(names[:n])
    return f"{shown}, ... ({len(names)} in all)" if len(names) > n else shown
