"""``actstats layers NETWORK``: the names, shapes, layouts and sizes of a network's layers."""

from __future__ import annotations

import json
import warnings

import typer
from rich.table import Table

from actstats.cli.app import app, console, handle_errors
from actstats.cli.checks import check_options
from actstats.net.network import LayerInfo, Network, network_layers
from actstats.net.reduce import DEFAULT_MAX_VALUES, default_reduction

__all__ = ["layers_command", "layers_records", "layers_table"]


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
    as_json: bool = typer.Option(False, "--json", help="One JSON list of layers, for scripts."),
) -> None:
    """List every layer: VGG alias, module name, kind, output shape, layout, size, default
    reduction, parameters.

    Any name in the table works for --layers and --neuron. The layout says what the
    axes mean (NCHW, NHWC, NTC:P+HxW tokens with P leading tokens, NC); "reduce" is
    what `collect` stores by default (at most DEFAULT_MAX_VALUES values per image).
    """
    check_options(input_size=input_size)
    with warnings.catch_warnings():  # random weights are fine for listing shapes
        warnings.simplefilter("ignore", UserWarning)
        net, rows = network_layers(network, weights, input_size)
    if as_json:
        typer.echo(json.dumps(layers_records(rows), indent=1))
    else:
        console.print(layers_table(net, rows, input_size, console.width))


def _default(row: LayerInfo) -> tuple[str, int | None]:
    r = default_reduction(row.shape, row.layout)
    return (str(r), r.dim(row.shape)) if r is not None else ("", None)


def layers_records(rows: list[LayerInfo]) -> list[dict]:
    """The rows as plain dicts (what ``--json`` prints)."""
    out = []
    for row in rows:
        reduce, dim = _default(row)
        out.append(
            {
                "alias": row.alias,
                "name": row.name,
                "kind": row.kind,
                "shape": list(row.shape),
                "layout": str(row.layout),
                "size": row.size,
                "default_reduce": reduce or None,
                "default_dim": dim,
                "params": row.params,
            }
        )
    return out


#: Columns in the order they are left out when the terminal is too narrow for all.
_DROP_ORDER = ("params", "kind", "size", "reduce")
_COLUMNS = ("alias", "name", "kind", "shape", "layout", "size", "reduce", "params")
_RIGHT = {"shape", "size", "params"}


def _cells(row: LayerInfo) -> dict[str, str]:
    reduce, dim = _default(row)
    return {
        "alias": row.alias or "",
        "name": row.name,
        "kind": row.kind,
        "shape": "x".join(map(str, row.shape)),
        "layout": str(row.layout),
        "size": f"{row.size:,}",
        "reduce": f"{reduce} ({dim:,})" if reduce else "-",
        "params": f"{row.params:,}",
    }


def layers_table(
    net: Network, rows: list[LayerInfo], input_size: int | None = None, width: int | None = None
) -> Table:
    """One row per leaf module (aliases first in network order).

    Names are never cut: where ``width`` (the terminal's) is too narrow for every
    column, the least needed columns are left out (and named in the caption),
    and only then do the longest cells fold onto further lines.
    """
    cells = [_cells(row) for row in rows]
    natural = {c: max([len(c)] + [len(r[c]) for r in cells]) for c in _COLUMNS}
    shown = list(_COLUMNS)
    for col in _DROP_ORDER:  # a cell needs its text plus 3 characters of border and padding
        if width is None or sum(natural[c] + 3 for c in shown) + 1 <= width:
            break
        shown.remove(col)
    left_out = [c for c in _COLUMNS if c not in shown]
    table = Table(
        title=f"{net.name}, input {input_size or net.preprocessing.crop}px; "
        f"reduce = collect's default (<= {DEFAULT_MAX_VALUES:,} values per image)",
        caption=f"left out for width: {', '.join(left_out)} (see --json)" if left_out else None,
    )
    for col in shown:
        justify = "right" if col in _RIGHT else "left"
        table.add_column(col, justify=justify, overflow="fold", min_width=min(natural[col], 12))  # type: ignore[arg-type]
    for r in cells:
        table.add_row(*(r[c] for c in shown))
    return table
