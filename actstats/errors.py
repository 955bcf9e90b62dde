"""The one exception type users see.

Library code raises :class:`ActstatsError` with a one-line message that names
the file/field at fault and what to do; the CLI prints it and exits 1.
"""

from __future__ import annotations

__all__ = ["ActstatsError"]


class ActstatsError(Exception):
    """A user-facing error: bad input, a refused file, an unknown name."""
