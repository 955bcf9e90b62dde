"""A corpus of hostile files: what an unlucky archive or an attacker puts where actstats reads.

Each builder writes one thing into a folder and returns its path; the fuzz
tests run collect, fit, load and report over them and assert that the run
survives, names the file, and loses nothing.
"""

from __future__ import annotations

import io
import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = [
    "HOSTILE_IMAGES",
    "deep_json",
    "fifo",
    "huge_header_npy",
    "non_utf8_png",
    "png",
    "sliver_png",
    "symlink_loop",
    "tiny_png_bytes",
]


def tiny_png_bytes(seed: int = 0, size: int = 12) -> bytes:
    """A small RGB PNG with random pixels."""
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def png(path: Path, seed: int = 0) -> Path:
    path.write_bytes(tiny_png_bytes(seed))
    return path


def non_utf8_png(folder: Path, seed: int = 0) -> Path:
    """A good image whose name is Latin-1 ``café.png`` (byte 0xE9, not valid UTF-8)."""
    raw = os.fsencode(folder) + b"/caf\xe9.png"
    with open(raw, "wb") as fh:
        fh.write(tiny_png_bytes(seed))
    return Path(os.fsdecode(raw))


def symlink_loop(folder: Path) -> Path:
    """``loop -> loop``: every stat of it fails with ELOOP."""
    path = folder / "loop.png"
    os.symlink("loop.png", path)
    return path


def dir_loop(folder: Path) -> Path:
    """``again -> .``: a folder symlink back to its own folder."""
    path = folder / "again"
    os.symlink(".", path)
    return path


def fifo(folder: Path, name: str = "pipe.png") -> Path:
    """A named pipe: opening it for reading blocks until a writer comes (forever)."""
    path = folder / name
    os.mkfifo(path)
    return path


def dev_zero(folder: Path, name: str = "zero.png") -> Path:
    """A symlink to ``/dev/zero``: endless bytes."""
    path = folder / name
    os.symlink("/dev/zero", path)
    return path


def sliver_png(path: Path, width: int = 1, height: int = 1_000_000) -> Path:
    """A valid 1 x 1,000,000 grey PNG of ~3 KB: few pixels decoded, billions after a resize."""
    row = b"\x00" + b"\x80" * width  # filter byte + pixels
    raw = zlib.compress(row * height, 9)

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")
    )
    return path


def huge_header_npy(path: Path, shape: tuple[int, ...] = (10**12,)) -> Path:
    """A .npy whose header claims ``shape`` (8 TB of float64) over 16 bytes of data."""
    header = {"descr": "<f8", "fortran_order": False, "shape": shape}
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, header)
    path.write_bytes(buffer.getvalue() + b"\x00" * 16)
    return path


def deep_json(depth: int = 100_000) -> str:
    """JSON nested ``depth`` lists deep (json.loads recurses once per level)."""
    return "[" * depth + "]" * depth


def write_json(path: Path, value: object) -> Path:
    path.write_text(json.dumps(value))
    return path


#: name -> builder(folder) for the bad files a class folder may hold beside good images.
HOSTILE_IMAGES = {
    "symlink loop": symlink_loop,
    "folder loop": dir_loop,
    "fifo": fifo,
    "dev zero": dev_zero,
    "sliver": lambda folder: sliver_png(folder / "sliver.png"),
    "empty": lambda folder: _write(folder / "empty.png", b""),
    "text": lambda folder: _write(folder / "notes.png", b"hello"),
    "truncated": lambda folder: _write(folder / "cut.png", tiny_png_bytes()[:60]),
    "non-utf8 name": non_utf8_png,
}


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path
