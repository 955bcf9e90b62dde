"""Command-line interface: ``actstats COMMAND``.

Importing this package registers every command module on :data:`app`.
"""

from __future__ import annotations

# Each command module registers itself on ``app`` when imported.
from actstats.cli import (  # noqa: F401
    collect,
    demo,
    explain,
    fit,
    layers,
    outliers,
    report,
    sample,
    top,
    train_generator,
)
from actstats.cli.app import app

__all__ = ["app", "main"]


def main() -> None:
    """Entry point of the ``actstats`` console script."""
    app()
