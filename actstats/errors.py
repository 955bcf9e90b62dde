"""The one exception type users see, and the one translation of OS errors into it.

Library code raises :class:`ActstatsError` with a one-line message that names
the file/field at fault and what to do; the CLI prints it and exits 1.
:func:`os_error` turns an ``OSError`` (permission, read-only or full disk, a
missing folder, a file where a folder belongs) into such a message, so no
traceback of the file system ever reaches a user.
"""

from __future__ import annotations

import errno
import os

__all__ = ["ActstatsError", "os_error"]


class ActstatsError(Exception):
    """A user-facing error: bad input, a refused file, an unknown name."""


#: errno -> (what happened, what to do)
_ADVICE = {
    errno.EACCES: ("permission denied", "check its permissions or choose another location"),
    errno.EPERM: ("operation not permitted", "check its permissions or choose another location"),
    errno.EROFS: ("read-only file system", "choose a writable location"),
    errno.ENOSPC: ("no space left on device", "free some space, then rerun the same command"),
    errno.EDQUOT: ("disk quota exceeded", "free some space, then rerun the same command"),
    errno.ENOENT: ("no such file or folder", "check the path"),
    errno.ENOTDIR: ("a file stands where a folder belongs", "choose a folder path"),
    errno.EEXIST: ("already exists", "choose another path"),
    errno.EISDIR: ("is a folder, not a file", "choose a file path"),
    errno.ELOOP: ("symlink loop", "remove the looping symlink"),
    errno.ENAMETOOLONG: ("name too long", "choose a shorter path"),
}


def os_error(exc: OSError, path: str | os.PathLike | None = None) -> ActstatsError:
    """One line for ``exc``: the path, what happened and what to do.

    ``path`` is the user's name for the thing being read or written; without it
    the path the OS reported is used.
    """
    where = os.fsdecode(path) if path is not None else (exc.filename or "")
    what, todo = _ADVICE.get(exc.errno or -1, (exc.strerror or str(exc), "check the path"))
    prefix = f"{where}: " if where else ""
    return ActstatsError(f"{prefix}{what}; {todo}")
