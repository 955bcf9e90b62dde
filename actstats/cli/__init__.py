"""Command-line interface: ``actstats COMMAND``.

Importing this package registers every command module on :data:`app`.
"""

from __future__ import annotations

import importlib

from actstats.cli.app import app

__all__ = ["app", "main"]

# Each command lives in its own module and registers itself on ``app``.
_COMMAND_MODULES = ("layers", "collect", "fit", "sample", "demo", "report", "explain")
for _name in _COMMAND_MODULES:
    try:
        importlib.import_module(f"actstats.cli.{_name}")
    except ModuleNotFoundError as _exc:  # a command module not written yet
        if _exc.name != f"actstats.cli.{_name}":
            raise


def main() -> None:
    """Entry point of the ``actstats`` console script."""
    app()
