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
from rich.table import Table

from actstats.cli.app import app, console, handle_errors
from actstats.collect import CollectSummary, collect
from actstats.reduce import parse_reduce_options
from actstats.runspec import merge_collect_options

__all__ = ["collect_command", "summary_table"]

EXIT_SKIPPED = 2


@app.command("collect")
@handle_errors
def collect_command(
    source: Path = typer.Argument(..., help="ROOT/<class>/<images>, or a run spec .toml"),
    store: str | None = typer.Option(
        None, "-o", "--store", help="Output zarr store: a path or fsspec URL (s3://, gs://, ...)."
    ),
    model: str | None = typer.Option(
        None, help="torchvision name or package.module:factory [default: vgg16]"
    ),
    weights: str | None = typer.Option(None, help="imagenet | PATH | none"),
    classes: str | None = typer.Option(None, help="Comma-separated names or a file of names."),
    per_class: int | None = typer.Option(None, "--per-class", help="First N files per class."),
    layers: str | None = typer.Option(None, help="Comma-separated, e.g. conv4_3,fc7,fc8."),
    reduce: list[str] | None = typer.Option(None, help="LAYER=full|mean|grid:S (repeatable)."),
    dtype: str | None = typer.Option(None, help="float16 | float32 [default: float32]"),
    batch_size: int | None = typer.Option(None, "--batch-size", help="[default: 64]"),
    chunk_size: int | None = typer.Option(None, "--chunk-size", help="Images per store chunk."),
    device: str | None = typer.Option(None, help="auto | cpu | cuda[:N] [default: auto]"),
    bf16: bool | None = typer.Option(None, "--bf16/--no-bf16", help="bfloat16 autocast (CUDA)."),
    decode: str | None = typer.Option(
        None, help="JPEG decoding: auto | cpu | gpu | mixed [default: auto = mixed on CUDA]"
    ),
    overwrite: bool | None = typer.Option(None, "--overwrite", help="Replace an existing store."),
    scheduler: str | None = typer.Option(
        None,
        help="Run on the dask.distributed cluster at ADDRESS (tcp://host:8786); "
        "threads (default) or sync run in-process.",
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
    flags = {
        "store": store,
        "model": model,
        "weights": weights,
        "classes": classes,
        "per_class": per_class,
        "layers": [s.strip() for s in layers.split(",") if s.strip()] if layers else None,
        "reduce": parse_reduce_options(reduce) or None,
        "dtype": dtype,
        "batch_size": batch_size,
        "chunk_size": chunk_size,
        "device": device,
        "bf16": bf16,
        "decode": decode,
        "overwrite": overwrite,
        "scheduler": scheduler,
        "workers": workers,
    }
    options = merge_collect_options(source, flags)
    # collect classifies oversized images itself; PIL's warning would only repeat it
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
    summary = collect(options.pop("root"), options.pop("store"), progress=progress, **options)
    console.print(summary_table(summary))
    if summary.skipped:
        raise typer.Exit(EXIT_SKIPPED)


def summary_table(summary: CollectSummary) -> Table:
    """The closing table: images, classes, skipped files by reason, seconds."""
    table = Table(title=f"collect -> {summary.store}", show_header=False)
    table.add_column("", style="bold")
    table.add_column("", justify="right")
    table.add_row("images", f"{summary.n_images:,}")
    table.add_row("classes", f"{summary.n_classes:,}")
    for reason, count in sorted(summary.skipped.items()):
        table.add_row(f"skipped: {reason}", f"{count:,}")
    if not summary.skipped:
        table.add_row("skipped", "0")
    table.add_row("chunks written", f"{summary.chunks_written:,}")
    table.add_row("seconds", f"{summary.seconds:,.1f}")
    return table
