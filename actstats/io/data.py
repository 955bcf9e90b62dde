"""Class folders: discovery, decoding, and naming what is wrong with a bad file.

A data set is ``ROOT/<class>/<file>`` (the ImageNet layout). Discovery lists
every non-hidden entry of every class folder, image or not, so that a stray
``notes.txt`` or a broken symlink is reported instead of silently ignored.
Decoding either returns an RGB image or raises :class:`BadImageError` with one of
the :data:`REASONS`; the collect pipeline records the reason and goes on.

No single file stops a run: a symlink loop, a FIFO or device, an unreadable
class folder, or a name that is not valid UTF-8 (stored losslessly, see
:func:`actstats.io.paths.encode_name`) is listed or skipped with its reason,
and an image is refused before decoding when it or its resized copy would
exceed the pixel budget (a 3 KB PNG of 1 x 1,000,000 pixels would become
256 x 256,000,000 after the short side is resized to 256).
"""

from __future__ import annotations

import io
import os
import stat
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from actstats.errors import ActstatsError
from actstats.io.paths import decode_name, encode_name

__all__ = [
    "REASONS",
    "BadImageError",
    "Dataset",
    "check_pixel_budget",
    "decode_jpegs",
    "discover",
    "file_stat",
    "jpeg_bytes",
    "load_image",
    "read_class_list",
]

#: Why a file or folder was skipped; the values stored in ``errors/reason``.
REASONS = (
    "empty class folder",
    "empty file",
    "broken symlink",
    "not a regular file",
    "unreadable",
    "unreadable folder",
    "not an image",
    "truncated",
    "corrupt",
    "decompression bomb",
    "extreme aspect ratio",
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
    not depend on where the data set is mounted; they are in stored form
    (:func:`~actstats.io.paths.encode_name`). ``empty_classes`` are folders
    that held no files and ``unreadable_classes`` folders that could not be
    listed; neither is in ``class_names``.
    """

    root: Path
    class_names: list[str]
    paths: list[str]
    labels: np.ndarray
    empty_classes: list[str]
    unreadable_classes: list[str] = field(default_factory=list)

    def absolute(self, index: int) -> Path:
        """The file behind ``paths[index]``."""
        return self.root / decode_name(self.paths[index])


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
    try:
        folders = sorted(e.name for e in os.scandir(root) if _visible(e) and _is_dir(e))
    except OSError as exc:
        raise ActstatsError(
            f"ROOT {root}: cannot list it ({exc.strerror}); check its permissions"
        ) from None
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
    class_names, paths, labels, empty, unreadable = [], [], [], [], []
    for folder in folders:
        try:
            entries = sorted(
                e.name for e in os.scandir(root / folder) if _visible(e) and not _is_dir(e)
            )
        except OSError:
            unreadable.append(encode_name(folder))
            continue
        if not entries:
            empty.append(encode_name(folder))
            continue
        label = len(class_names)
        class_names.append(encode_name(folder))
        for name in entries[:per_class]:
            paths.append(encode_name(f"{folder}/{name}"))
            labels.append(label)
    if not paths:
        raise ActstatsError(f"ROOT {root}: every class folder is empty or unreadable")
    labels_array = np.asarray(labels, dtype=np.int32)
    return Dataset(root, class_names, paths, labels_array, empty, unreadable)


def _visible(entry: os.DirEntry[str]) -> bool:
    return not entry.name.startswith(".")


def _is_dir(entry: os.DirEntry[str]) -> bool:
    """``entry.is_dir()``, False where the entry cannot be resolved (a symlink loop)."""
    try:
        return entry.is_dir()
    except OSError:
        return False


def file_stat(path: str | Path) -> tuple[int, int]:
    """(size, mtime_ns) of ``path`` following symlinks; (-1, -1) when it cannot be stat'ed.

    Recorded per file when it is read, so a resume can tell a changed file.
    """
    try:
        info = os.stat(path)
    except (OSError, ValueError):
        return (-1, -1)
    return (info.st_size, info.st_mtime_ns)


def load_image(path: str | Path, *, resize: int | None = None) -> Image.Image:
    """Decode ``path`` fully into an 8-bit RGB image, or raise :class:`BadImageError`.

    Conversions are explicit because ``Image.convert("RGB")`` gets some wrong:
    16-bit grayscale is scaled (not clipped) to 8 bits, transparent pixels
    are composited over white (not dropped to their hidden colour), and EXIF
    orientation is applied. Images over ``PIL.Image.MAX_IMAGE_PIXELS`` count
    as decompression bombs (PIL only warns below twice that); with ``resize``
    (the short side it will be resized to) so do images whose resized copy
    would exceed that budget ("extreme aspect ratio"). Only regular files are
    opened: a FIFO would block, a device never end.
    """
    path = Path(path)
    try:
        info = path.stat()
    except FileNotFoundError:
        reason = "broken symlink" if path.is_symlink() else "unreadable"
        raise BadImageError(reason, str(path)) from None
    except OSError as exc:  # ELOOP: a symlink loop
        reason = "broken symlink" if path.is_symlink() else "unreadable"
        raise BadImageError(reason, f"{path}: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise BadImageError("not a regular file", str(path))
    if info.st_size == 0:
        raise BadImageError("empty file", str(path))
    try:
        with open(path, "rb", opener=_open_nonblocking) as fh:
            return _decode(fh, path, resize)
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


def _open_nonblocking(path: str, flags: int) -> int:
    """``open``'s opener: a FIFO swapped in after the type check cannot block the open."""
    return os.open(path, flags | os.O_NONBLOCK)


def _decode(fh: object, path: Path, resize: int | None) -> Image.Image:
    with Image.open(fh) as im:  # type: ignore[arg-type]
        check_pixel_budget(im.width, im.height, resize, path)
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


def check_pixel_budget(width: int, height: int, resize: int | None, path: str | Path) -> None:
    """Raise :class:`BadImageError` if the image, or its copy resized so that the short
    side is ``resize``, has more than ``PIL.Image.MAX_IMAGE_PIXELS`` pixels."""
    limit = Image.MAX_IMAGE_PIXELS
    if limit is None:
        return
    if width * height > limit:
        raise BadImageError("decompression bomb", f"{path}: {width}x{height} pixels > {limit}")
    if resize is not None and min(width, height) > 0:
        scale = resize / min(width, height)
        resized = round(width * scale) * round(height * scale)
        if resized > limit:
            raise BadImageError(
                "extreme aspect ratio",
                f"{path}: {width}x{height} is {resized:,} pixels at a {resize}px short side",
            )


# ------------------------------------------------------- tensor (nvjpeg) decoding
_EXIF_ORIENTATION = 0x0112
# torchvision 0.29 deprecates its decoders in favour of TorchCodec; they still work
warnings.filterwarnings(
    "ignore", message="The image decoding and encoding", category=DeprecationWarning
)


def jpeg_bytes(path: str | Path, resize: int | None = None) -> torch.Tensor | None:
    """The bytes of ``path`` as a uint8 tensor when ``decode_jpegs`` decodes it as PIL would.

    That is a complete (ends with the EOI marker) baseline/progressive JPEG in
    RGB or grayscale, without an EXIF rotation, within the pixel budget
    (:func:`check_pixel_budget`, at short side ``resize``);
    anything else -- and any file that cannot be read or parsed, or is not a
    regular file -- gives ``None``, and the caller takes the PIL path
    (:func:`load_image`), which classifies bad files. Only the header is
    parsed here (cheap).
    """
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return None
        data = Path(path).read_bytes()
        if len(data) < 4 or data[:3] != b"\xff\xd8\xff" or data[-2:] != b"\xff\xd9":
            return None
        with Image.open(io.BytesIO(data)) as im:
            check_pixel_budget(im.width, im.height, resize, path)
            if (
                im.format != "JPEG"
                or im.mode not in ("RGB", "L")
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
