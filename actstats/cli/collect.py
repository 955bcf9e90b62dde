"""``actstats collect``: class folders -> activation store.

Exit codes: 0 when every file was used, 2 when some files (or empty class
folders) were skipped -- the store is complete and usable, the skipped ones
are listed in it -- and 1 on an error.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import typer
from PIL import Image
from rich.markup import escape
from rich.table import Table

from actstats.cli.app import app, console, handle_errors
from actstats.cli.checks import check_options, check_scheduler
from actstats.cli.options import CLASSES, NETWORK, OLD_MODEL, renamed, split_list
from actstats.cli.progress import counting_bar
from actstats.io.runspec import merge_collect_options
from actstats.net.reduce import parse_reduce_options
from actstats.pipeline.collect import CollectSummary, collect

__all__ = ["collect_command", "summary_table"]

EXIT_SKIPPED = 2


@app.command("collect")
@handle_errors
def collect_command(
    source: Path = typer.Argument(..., help="ROOT/<class>/<images>, or a run spec .toml"),
    output: str | None = typer.Option(
        None, "-o", "--output", help="Output zarr store: a path or fsspec URL (s3://, gs://, ...)."
    ),
    old_store: str | None = typer.Option(None, "--store", hidden=True, help="Old name of -o."),
    network: str | None = NETWORK,
    old_model: str | None = OLD_MODEL,
    weights: str | None = typer.Option(None, help="imagenet | PATH | none"),
    classes: list[str] | None = CLASSES,
    per_class: int | None = typer.Option(None, "--per-class", help="First N files per class."),
    layers: list[str] | None = typer.Option(
        None, "--layers", help="Layers, comma-separated or repeated, e.g. conv4_3,fc7,fc8."
    ),
    reduce: list[str] | None = typer.Option(
        None,
        help="LAYER=REDUCTION (repeatable): full, mean, grid:S, cls, tokens:S or parts joined "
        "by + (cls+grid:2); default per layout within --max-values.",
    ),
    max_values: int | None = typer.Option(
        None,
        "--max-values",
        help="Values per image a layer's default reduction may store [default: 16384].",
    ),
    dtype: str | None = typer.Option(None, help="float16 | float32 [default: float32]"),
    batch_size: int | None = typer.Option(None, "--batch-size", help="[default: 64]"),
    chunk_size: int | None = typer.Option(None, "--chunk-size", help="Images per store chunk."),
    device: str | None = typer.Option(None, help="auto | cpu | cuda[:N] [default: auto]"),
    bf16: bool | None = typer.Option(None, "--bf16/--no-bf16", help="bfloat16 autocast (CUDA)."),
    decode: str | None = typer.Option(
        None, help="JPEG decoding: auto | cpu | gpu | mixed [default: auto = mixed on CUDA]"
    ),
    compile: bool | None = typer.Option(
        None,
        "--compile/--no-compile",
        help="torch.compile the forward and reductions [default: on CUDA only].",
    ),
    overwrite: bool | None = typer.Option(None, "--overwrite", help="Replace an existing store."),
    scheduler: str | None = typer.Option(
        None,
        help="threads (default) or sync in-process, or the dask.distributed cluster at "
        "ADDRESS (tcp://host:8786).",
    ),
    workers: int | None = typer.Option(
        None, help="Start N local dask worker processes (on CUDA: one per GPU, needs dask-cuda)."
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Collect activations of the images under SOURCE into a zarr store (resumable).

    Rerun the same command to resume an interrupted run. Exit code 2 means the
    store is complete but some files were skipped (listed in the summary).
    """
    class_list = split_list(classes)
    flags = {
        "store": renamed(output, old_store, "-o/--output", "--store"),
        "network": renamed(network, old_model, "--network", "--model"),
        "weights": weights,
        "classes": ",".join(class_list) if class_list else None,
        "per_class": per_class,
        "layers": split_list(layers),
        "reduce": parse_reduce_options(reduce) or None,
        "max_values": max_values,
        "dtype": dtype,
        "batch_size": batch_size,
        "chunk_size": chunk_size,
        "device": device,
        "bf16": bf16,
        "decode": decode,
        "compile": compile,
        "overwrite": overwrite,
        "scheduler": scheduler,
        "workers": workers,
    }
    options = merge_collect_options(source, flags)  # run-spec values are checked too
    check_options(
        **{k: options.get(k) for k in ("per_class", "batch_size", "chunk_size", "workers")}
    )
    check_scheduler(options.get("scheduler"), ("threads", "sync", "synchronous"))
    # collect classifies oversized images itself; PIL's warning would only repeat it
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
    with counting_bar("collect", "images", enabled=progress) as report:
        summary = collect(options.pop("root"), options.pop("store"), progress=report, **options)
    console.print(summary_table(summary))
    if summary.skipped:
        raise typer.Exit(EXIT_SKIPPED)


def summary_table(summary: CollectSummary) -> Table:
    """The closing table: images, classes, skipped files by reason, seconds."""
    table = Table(title=f"collect -> {escape(summary.store)}", show_header=False)
    table.add_column("", style="bold")
    table.add_column("", justify="right")
    table.add_row("images", f"{summary.n_images:,}")
    table.add_row("classes", f"{summary.n_classes:,}")
    for reason, count in sorted(summary.skipped.items()):
        table.add_row(f"skipped: {reason}", f"{count:,}")
    if not summary.skipped:
        table.add_row("skipped", "0")
    if summary.clipped:
        table.add_row("float16 values clipped", f"{summary.clipped:,}")
    table.add_row("chunks written", f"{summary.chunks_written:,}")
    table.add_row("seconds", f"{summary.seconds:,.1f}")
    return table
