"""The typer application and the one place errors become exit codes.

Each command module (``actstats/cli/<command>.py``) registers itself on
:data:`app`; commands are option declarations, a docstring and one call into
the library. Library code raises :class:`~actstats.errors.ActstatsError`;
:func:`handle_errors` prints it as one red line and exits 1.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console

from actstats.errors import ActstatsError

__all__ = ["app", "console", "err_console", "handle_errors"]

app = typer.Typer(
    name="actstats",
    help="Learn statistics of a network's activations on real images and draw realistic "
    "images for a neuron.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])


def _print_warning(message: Warning | str, category: type[Warning], *_args: Any) -> None:
    """Library warnings as one line each (``warning: ...``), not Python's two-line form."""
    err_console.print(f"[bold yellow]warning:[/] {message}", highlight=False, soft_wrap=True)


def handle_errors(fn: F) -> F:
    """Turn an :class:`ActstatsError` raised by ``fn`` into a one-line message and exit 1;
    print the library's warnings as one line each."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with warnings.catch_warnings():
                warnings.showwarning = _print_warning
                return fn(*args, **kwargs)
        except ActstatsError as exc:
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]
