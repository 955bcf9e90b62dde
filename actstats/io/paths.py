"""Safe paths: outputs kept apart from inputs, and files read only when they are plain files.

Two dangers, one module. An output that overlaps the data it is made from
(``collect ROOT -o ROOT``) turns ``--overwrite`` into deleting the user's
images; :func:`refuse_overlap` stops that before anything is written. A file
named by a data file (a model directory's ``arrays/e0000/mean.npy``) may be a
symlink to ``/dev/zero``, a FIFO that blocks forever, or a path out of the
directory; :func:`read_regular_file` reads only a regular file inside its
folder, reached without symlinks, and only up to a size the caller expects.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path, PurePosixPath

from actstats.errors import ActstatsError, os_error

__all__ = [
    "decode_name",
    "encode_name",
    "is_local",
    "local_path",
    "overlaps",
    "read_regular_file",
    "refuse_overlap",
    "show_name",
    "write_atomic",
]


def is_local(location: str | os.PathLike) -> bool:
    """Whether ``location`` is a local path (plain or ``file://``), not another fsspec URL."""
    text = os.fspath(location)
    return "://" not in text or text.startswith("file://")


def local_path(location: str | os.PathLike) -> Path:
    """The absolute, symlink-resolved local path of ``location`` (plain or ``file://``)."""
    return Path(os.fspath(location).removeprefix("file://")).resolve()


def overlaps(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two local paths are the same, or one lies inside the other (symlinks resolved)."""
    pa, pb = local_path(a), local_path(b)
    return pa == pb or pa.is_relative_to(pb) or pb.is_relative_to(pa)


def refuse_overlap(output: str | os.PathLike, source: str | os.PathLike, flag: str) -> None:
    """Raise unless ``output`` (named by ``flag``) stays clear of the ``source`` folder."""
    if is_local(output) and is_local(source) and overlaps(output, source):
        raise ActstatsError(
            f"{flag} {os.fspath(output)}: overlaps the source folder {os.fspath(source)}; "
            "choose an output outside it (nothing was written)"
        )


def read_regular_file(folder: Path, rel: str, max_bytes: int) -> bytes:
    """The bytes of ``folder/rel`` if it is a regular file of at most ``max_bytes``.

    ``rel`` is a ``/``-separated relative path; no component may be ``..``,
    absolute, or a symlink, and the file must not be a FIFO, socket or device.
    Raises :class:`ActstatsError` naming ``rel`` otherwise, and
    ``FileNotFoundError`` when it does not exist.
    """
    parts = PurePosixPath(rel).parts
    if not parts or PurePosixPath(rel).is_absolute() or ".." in parts:
        raise ActstatsError(f"{folder}: entry {rel!r} lies outside the folder; refused")
    here = folder
    for i, part in enumerate(parts):
        here = here / part
        try:
            mode = os.lstat(here).st_mode
        except FileNotFoundError:
            raise  # the caller knows what a missing entry means
        except OSError as exc:
            raise os_error(exc, here) from None
        last = i == len(parts) - 1
        if stat.S_ISLNK(mode) or (not last and not stat.S_ISDIR(mode)):
            raise ActstatsError(f"{here}: a symlink or non-folder inside the model; refused")
        if last and not stat.S_ISREG(mode):
            raise ActstatsError(f"{here}: not a regular file (FIFO, socket or device); refused")
    try:
        fd = os.open(here, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ActstatsError(f"{here}: became a symlink while being read; refused") from None
        raise os_error(exc, here) from None
    with os.fdopen(fd, "rb") as fh:
        info = os.fstat(fh.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise ActstatsError(f"{here}: not a regular file; refused")
        if info.st_size > max_bytes:
            raise ActstatsError(
                f"{here}: {info.st_size:,} bytes, more than the {max_bytes:,} its entry allows; "
                "refused (tampered or not this model's file)"
            )
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ActstatsError(f"{here}: grew past {max_bytes:,} bytes while being read; refused")
    return data


#: Leads a stored name that is not valid UTF-8; no real relative path starts with NUL.
_RAW_MARK = "\0"


def encode_name(name: str) -> str:
    """A relative path as stored text, lossless for names that are not valid UTF-8.

    On POSIX a file name is bytes; Python decodes undecodable bytes to lone
    surrogates (``os.fsdecode``), which zarr's UTF-8 strings cannot hold. Such
    a name is stored as NUL + its bytes read as Latin-1 (one character per
    byte, so a Latin-1 ``café.jpg`` reads back as ``café.jpg``); every other
    name is stored as it is.
    """
    try:
        name.encode("utf-8")
        return name
    except UnicodeEncodeError:
        return _RAW_MARK + os.fsencode(name).decode("latin-1")


def decode_name(stored: str) -> str:
    """The path :func:`encode_name` stored, as ``os.fsdecode`` gives it (openable again)."""
    if stored.startswith(_RAW_MARK):
        return os.fsdecode(stored[len(_RAW_MARK) :].encode("latin-1"))
    return stored


def show_name(stored: str) -> str:
    """A stored name for messages: printable, with undecodable bytes as ``\\xNN``."""
    raw = decode_name(stored)
    return os.fsencode(raw).decode("utf-8", "backslashreplace")


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write ``data`` to ``path`` through a hidden temporary file beside it, then rename:
    a reader (or a run killed mid-write) sees the old file or the new one, never half."""
    tmp = path.with_name(f".{path.name}.tmp")
    if isinstance(data, str):
        tmp.write_text(data)
    else:
        tmp.write_bytes(data)
    os.replace(tmp, path)
