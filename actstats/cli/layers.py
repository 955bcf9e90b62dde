"""``actstats layers NETWORK``: the names, shapes and sizes of a network's layers."""

from __future__ import annotations

import warnings

import typer
from rich.table import Table

from actstats.cli.app import app, console, handle_errors
from actstats.cli.checks import check_options
from actstats.net.network import Network, load_network

__all__ = ["layers_command", "layers_table"]


@app.command("layers")
@handle_errors
def layers_command(
    network: str = typer.Argument(
        ..., metavar="NETWORK", help="torchvision name or package.module:factory"
    ),
    weights: str | None = typer.Option(
        None,
        help="imagenet | PATH | none [default: none for torchvision names: shapes need no weights]",
    ),
    input_size: int | None = typer.Option(
        None, "--input-size", help="Input side in pixels [default: crop size]"
    ),
) -> None:
    """List every layer: VGG alias, module name, kind, output shape, size, parameters.

    Any name in the table works for --layers and --neuron.
    """
    check_options(input_size=input_size)
    if weights is None and ":" not in network:
        weights = "none"
    with warnings.catch_warnings():  # random weights are fine for listing shapes
        warnings.simplefilter("ignore", UserWarning)
        net = load_network(network, weights, device="cpu")
    console.print(layers_table(net, input_size))


def layers_table(net: Network, input_size: int | None = None) -> Table:
    """One row per leaf module (aliases first in network order)."""
    table = Table(
        title=f"{net.name} ({net.weights}), input {input_size or net.preprocessing.crop}px"
    )
    for col, justify in (
        ("alias", "left"),
        ("name", "left"),
        ("kind", "left"),
        ("output shape", "right"),
        ("size", "right"),
        ("params", "right"),
    ):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for row in net.layer_info(input_size):
        table.add_row(
            row.alias or "",
            row.name,
            row.kind,
            "x".join(map(str, row.shape)),
            f"{row.size:,}",
            f"{row.params:,}",
        )
    return table
