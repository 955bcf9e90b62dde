"""Options every command spells the same way, and the old spellings kept for one release.

* ``--classes`` / ``--layers``: comma-separated and repeatable (``--layers a,b --layers c``).
* ``-o/--output``: what the command writes.
* ``--network``: the network (a torchvision name or ``package.module:factory``);
  ``--model`` still works, with a one-line deprecation warning.
* ``--fitted``: a fitted-models directory where it is optional (``sample`` takes it as
  its first argument); ``--models`` still works, with a warning.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

import typer

from actstats.cli.app import err_console

__all__ = [
    "CLASSES",
    "FITTED",
    "LAYERS",
    "NETWORK",
    "OLD_FITTED",
    "OLD_MODEL",
    "renamed",
    "split_list",
]

T = TypeVar("T")

CLASSES_HELP = "Class folder names, comma-separated or repeated"
LAYERS_HELP = "Layers, comma-separated or repeated"


def split_list(values: Sequence[str] | None) -> list[str] | None:
    """``["a,b", "c"]`` -> ``["a", "b", "c"]``; None (or nothing) when none were given."""
    items = [s.strip() for v in values or [] for s in v.split(",") if s.strip()]
    return items or None


def renamed(new: T | None, old: T | None, new_name: str, old_name: str) -> T | None:
    """The value of ``new_name``, else of the deprecated ``old_name`` (with a warning)."""
    if old is None:
        return new
    if new is not None and new != old:
        raise typer.BadParameter(f"{old_name} is the old name of {new_name}; give one")
    err_console.print(
        f"[yellow]warning:[/] {old_name} is deprecated; use {new_name}", highlight=False
    )
    return old


def _option(default: Any, *names: str, help: str, hidden: bool = False) -> Any:
    return typer.Option(default, *names, help=help, hidden=hidden)


NETWORK = _option(
    None, "--network", help="torchvision name or package.module:factory [default: vgg16]"
)
OLD_MODEL = _option(None, "--model", help="Deprecated name of --network.", hidden=True)
FITTED = _option(None, "--fitted", help="Fitted-models directory written by `actstats fit`.")
OLD_FITTED = _option(None, "--models", help="Deprecated name of --fitted.", hidden=True)
CLASSES = _option(None, "--classes", help=f"{CLASSES_HELP} (or a file of names).")
LAYERS = _option(None, "--layers", help=f"{LAYERS_HELP}.")
