"""The typer application and the one place errors become exit codes.

Each command module (``actstats/cli/<command>.py``) registers itself on
:data:`app`; commands are option declarations, a docstring and one call into
the library. Library code raises :class:`~actstats.errors.ActstatsError`;
:func:`handle_errors` prints it as one red line and exits 1, and does the same
for any ``OSError`` that escaped the library (full disk, read-only folder).
Messages are printed with rich markup escaped and emoji codes off, so
``fc8:-1:`` or ``[collect]`` in a message reach the user as typed.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from actstats.errors import ActstatsError, os_error

__all__ = ["app", "console", "err_console", "handle_errors", "print_error"]

app = typer.Typer(
    name="actstats",
    help="Learn statistics of a network's activations on real images and draw realistic "
    "images for a neuron.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console(emoji=False)
err_console = Console(stderr=True, emoji=False)

F = TypeVar("F", bound=Callable[..., Any])


def print_error(message: str) -> None:
    """One red ``error:`` line on stderr; ``message`` is shown literally (no markup, no emoji)."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


def _show_warning(message: Warning | str, category: type[Warning], *args: Any, **kw: Any) -> None:
    """``warnings.showwarning`` for commands: one yellow line, no source line."""
    err_console.print(
        f"[yellow]warning:[/] {escape(str(message))}", highlight=False, soft_wrap=True
    )


def handle_errors(fn: F) -> F:
    """Turn an :class:`ActstatsError` or ``OSError`` raised by ``fn`` into one line and exit 1;
    show warnings as one line each."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with warnings.catch_warnings():
                warnings.showwarning = _show_warning
                return fn(*args, **kwargs)
        except ActstatsError as exc:
            print_error(str(exc))
            raise typer.Exit(1) from None
        except OSError as exc:
            print_error(str(os_error(exc)))
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]
