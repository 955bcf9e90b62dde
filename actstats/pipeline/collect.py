"""The collect pipeline: class folders -> activation store, resumable.

One dask graph over partitions of the file list, one partition per store
chunk: ``decode-c-b`` tasks, one per batch (read, convert to RGB, resize and
crop to uint8; or, for the device decoder, only read JPEG bytes) feed
``forward-c`` (uint8 to the device, decode there if needed, normalize,
batched forward under ``torch.inference_mode``, reductions on the device, one
copy back per batch, whole-chunk region writes, then the chunk's done flag).
On CUDA the network runs channels_last with cuDNN autotuning (and bf16
autocast with ``bf16``). Tasks share no chunk, so no
write locks; a rerun skips chunks whose flag is set, and since each chunk is
computed the same way whenever it runs, a resumed store equals an
uninterrupted one.

The graph and its tasks are :mod:`actstats.pipeline.collect_graph`; this module
checks the inputs, opens (resumes) the store and records the result.

Threads: forward passes are serialized per process and device by a lock, so
torch's intra-op pool serves one pass at a time; the other dask threads
decode the next partitions meanwhile. The local default is the threaded
scheduler with 2 threads on a CPU device (decode one partition ahead) and
every core but one on CUDA (decoding is then the bottleneck). The device lock
is only taken by forward tasks, so decoding chunk k+1 overlaps the forward of
chunk k.

Distributed (see :mod:`actstats.pipeline.cluster`): ``workers=N`` starts a
``LocalCluster`` of N processes (``LocalCUDACluster``, one per GPU, on CUDA)
and ``scheduler=ADDRESS`` joins a running cluster. A ``NetworkPlugin`` loads
the network once per worker. Workers must reach the data root and the store at the same
path or URL. A worker that dies loses only its unfinished chunks: dask
retries them elsewhere, and if it gives up the run fails with "rerun to
resume" and a rerun computes exactly the chunks without a done flag.
"""

from __future__ import annotations

import dataclasses
import os
import time
import uuid
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from actstats.errors import ActstatsError
from actstats.io.data import Dataset, discover, file_stat, read_class_list
from actstats.io.locks import writer_lock
from actstats.io.paths import refuse_overlap, show_name
from actstats.io.store import (
    STORE_VERSION,
    ActivationStore,
    create_store,
    default_chunk_size,
    finish_store,
    open_store,
    resolve_location,
    store_state,
)
from actstats.net.network import Network, load_network
from actstats.net.reduce import DEFAULT_MAX_VALUES, default_reduction, parse_reduction
from actstats.pipeline.collect_graph import DECODERS, Job, run_graph
from actstats.pipeline.memory import format_bytes
from actstats.pipeline.schedule import Progress, check_reachable
from actstats.version import __version__

__all__ = ["CollectSummary", "collect", "plan_layers"]

#: attrs that must match for a rerun to resume an existing store.
_IDENTITY = (
    "model",
    "weights_sha256",
    "preprocessing",
    "layers",
    "class_names",
    "n_images",
    "dtype",
    "autocast",
)


@dataclass(frozen=True)
class CollectSummary:
    """What a run produced. ``skipped`` counts skipped files (and empty folders) by reason.

    ``store`` is the location as given (a local path or an fsspec URL).
    """

    store: str
    n_images: int
    n_classes: int
    skipped: dict[str, int]
    seconds: float
    chunks_written: int = 0
    errors: list[tuple[str, str]] = field(default_factory=list)
    #: Summed task seconds by stage (``decode`` in the dask threads, ``device_decode``,
    #: ``forward`` -- device work, reductions and copies back --, ``write``,
    #: ``lock_wait``); stages overlap, so they add up to more than ``seconds``.
    stage_seconds: dict[str, float] = field(default_factory=dict)
    #: float16 stores: activation values beyond +-65504 that were clipped to it (see
    #: ``images/clipped``); 0 when nothing overflowed.
    clipped: int = 0


def collect(
    root: str | Path,
    store: str | os.PathLike,
    *,
    network: str | Network = "vgg16",
    weights: str | None = None,
    layers: Sequence[str] | None = None,
    reduce: dict[str, str] | None = None,
    classes: str | Sequence[str] | None = None,
    per_class: int | None = None,
    batch_size: int = 64,
    device: str | None = None,
    dtype: str = "float32",
    chunk_size: int | None = None,
    overwrite: bool = False,
    scheduler: str | None = None,
    workers: int | None = None,
    progress: Progress | None = None,
    bf16: bool = False,
    decode: str = "auto",
    max_values: int = DEFAULT_MAX_VALUES,
    compile: bool | None = None,
) -> CollectSummary:
    """Write the activations of ``root/<class>/*`` at ``layers`` into a zarr store.

    Rerunning the same call on a partly written store resumes it; a store made
    with another model, weights, layers, reductions, preprocessing, dtype or
    file list is refused unless ``overwrite``. ``network`` is a torchvision name or
    ``package.module:factory`` loaded with ``weights`` on ``device``, or an already
    loaded :class:`~actstats.net.network.Network` (then ``weights`` and ``device`` must
    not be given). ``store`` is a local path or an fsspec URL. ``progress(images_done,
    total)`` is called as chunks finish. See the module docstring for scheduling.

    ``decode``: ``cpu`` decodes with PIL in the dask threads; ``gpu`` decodes
    plain JPEGs batched with ``torchvision.io.decode_jpeg`` on the network's
    device (any other file, and any file it fails on, takes the PIL path, so
    bad files are named the same); ``mixed`` does every other batch each way;
    ``auto`` is ``mixed`` on CUDA, ``cpu`` otherwise. The device decoder's
    pixels may differ from PIL's by a few levels (nvjpeg's IDCT and chroma
    upsampling, float resize), so the choice is recorded in ``attrs["decode"]``
    but a store may be resumed with another one.

    Safety: the store may not overlap ``root`` (``--overwrite`` would delete
    images); one writer at a time holds the store's lock
    (:mod:`actstats.io.locks`); a resume refuses files whose size or mtime
    changed since they were read; float16 values beyond +-65504 are clipped
    to it, counted per row in ``images/clipped`` and reported, never stored
    as ``inf``.

    ``max_values``: the per-image budget of each layer's default reduction (see
    :func:`plan_layers`); a named ``reduce`` above it is kept with a warning.

    ``compile``: run each batch through ``torch.compile`` (:mod:`actstats.net.rows`);
    ``None`` compiles on CUDA only (on a CPU the first batch would wait ~20 s for
    the compiler). A model that cannot be compiled runs eager, with one warning.
    """
    start = time.perf_counter()
    store = os.fspath(store)
    refuse_overlap(store, root, "-o")
    check_reachable(store, scheduler, workers)
    if dtype not in ("float16", "float32"):
        raise ActstatsError(f"--dtype {dtype}: use float16 or float32")
    if decode not in DECODERS:
        raise ActstatsError(f"--decode {decode}: use {', '.join(DECODERS)}")
    if batch_size < 1 or (chunk_size is not None and chunk_size < 1):
        raise ActstatsError("--batch-size and --chunk-size must be at least 1")
    dataset = discover(root, classes=read_class_list(classes), per_class=per_class)
    with writer_lock(store, "store"):
        summary = _collect_locked(
            dataset,
            store,
            _network(network, weights, device),
            layers=layers,
            reduce=reduce,
            batch_size=batch_size,
            dtype=dtype,
            chunk_size=chunk_size,
            overwrite=overwrite,
            scheduler=scheduler,
            workers=workers,
            progress=progress,
            bf16=bf16,
            decode=decode,
            max_values=max_values,
            compile=compile,
        )
    return dataclasses.replace(summary, seconds=time.perf_counter() - start)


def _collect_locked(
    dataset: Dataset,
    store: str,
    net: Network,
    *,
    layers: Sequence[str] | None,
    reduce: dict[str, str] | None,
    batch_size: int,
    dtype: str,
    chunk_size: int | None,
    overwrite: bool,
    scheduler: str | None,
    workers: int | None,
    progress: Progress | None,
    bf16: bool,
    decode: str,
    max_values: int,
    compile: bool | None,
) -> CollectSummary:
    """:func:`collect` once the files are listed and the store's writer lock is held."""
    if bf16 and net.device.type != "cuda":
        warnings.warn("--bf16: autocast needs a CUDA device; running in float32", stacklevel=3)
        bf16 = False
    if decode == "auto":
        decode = "mixed" if net.device.type == "cuda" else "cpu"
    plan = plan_layers(net, layers, reduce, max_values)
    row_bytes = max(entry["dim"] for entry in plan) * np.dtype(dtype).itemsize
    attrs = {
        "version": STORE_VERSION,
        "actstats_version": __version__,
        "model": net.name,
        "weights": net.weights,
        "weights_sha256": net.weights_sha256,
        "preprocessing": net.preprocessing.to_dict(),
        "layers": plan,
        "class_names": dataset.class_names,
        "chunk_size": chunk_size or default_chunk_size(batch_size, row_bytes),
        "n_images": len(dataset.paths),
        "dtype": dtype,
        "complete": False,
        "root": str(dataset.root.resolve()),
        "autocast": "bfloat16" if bf16 else None,
        "decode": decode,
    }
    target = _open_or_create(
        store, attrs, dataset, overwrite=overwrite, chunk_size_given=chunk_size is not None
    )
    done = target.done
    pending = [c for c in range(len(done)) if not done[c]]
    job = Job(
        resolve_location(store),
        str(dataset.root.resolve()),
        target.attrs,
        net.preprocessing,
        batch_size,
        decode,
        uuid.uuid4().hex,
        net.device.type == "cuda" if compile is None else compile,
    )
    stages: Counter[str] = Counter()
    run_graph(
        pending, job, net, _images_done(progress, target.attrs, pending), scheduler, workers, stages
    )
    summary = _finish(target, dataset, len(pending), 0.0)
    return dataclasses.replace(summary, stage_seconds=dict(stages))


def _network(network: str | Network, weights: str | None, device: str | None) -> Network:
    """Load ``network`` by name, or take a loaded one (then nothing may say how to load it)."""
    if isinstance(network, Network):
        if weights is not None or device is not None:
            raise ActstatsError(
                "collect: a loaded network already has its weights and device; "
                "pass weights and device only with a network name"
            )
        return network
    return load_network(network, weights, device=device or "auto")


def plan_layers(
    net: Network,
    layers: Sequence[str] | None,
    reduce: dict[str, str] | None,
    max_values: int = DEFAULT_MAX_VALUES,
) -> list[dict[str, Any]]:
    """The store's ``layers`` entries, shallow to deep: name, module, layout, reduce, shape, dim.

    Defaults: :meth:`Network.default_layers`, each reduced by
    :func:`~actstats.reduce.default_reduction` for its layout so that no layer
    stores more than ``max_values`` values per image. A named reduction above
    that budget (``--reduce LAYER=full``) is kept, with a one-line warning.
    """
    names = list(layers) if layers else net.default_layers()
    reduce = dict(reduce or {})
    unknown = [layer for layer in reduce if layer not in names]
    if unknown:
        raise ActstatsError(
            f"--reduce {unknown[0]}: not a collected layer; collected: {', '.join(names)}"
        )
    shapes = net.layer_shapes(names)
    plan = []
    for name, shape in shapes.items():
        layout = net.layer_layout(name)
        if name in reduce:
            reduction = parse_reduction(reduce[name], layout)
        else:
            reduction = default_reduction(shape, layout, max_values)
            if reduction is None:
                raise ActstatsError(
                    f"layer {name} ({list(shape)}, layout {layout}): no reduction keeps it "
                    f"under {max_values:,} values per image; pass --reduce {name}=full to "
                    "store it whole, or choose another layer"
                )
        reduction.check(name, shape)
        dim = reduction.dim(shape)
        if dim > max_values:
            warnings.warn(
                f"--reduce {name}={reduction}: stores {dim:,} values per image "
                f"({format_bytes(dim * 4)} in float32), above the {max_values:,}-value budget",
                stacklevel=2,
            )
        plan.append(
            {
                "name": name,
                "module": net.module_name(name),
                "layout": str(layout),
                "reduce": str(reduction),
                "shape": list(shape),
                "dim": dim,
            }
        )
    return plan


# ------------------------------------------------------------------ the store
def _open_or_create(
    path: str, attrs: dict[str, Any], dataset: Dataset, *, overwrite: bool, chunk_size_given: bool
) -> ActivationStore:
    """Resume a matching store, refuse a different one, or create a new one.

    An interrupted creation or an empty folder is created again; an existing
    folder or file that actstats did not make is never replaced.
    """
    state = store_state(path)
    if state == "foreign":
        raise ActstatsError(
            f"store {path}: exists and is not an actstats store; refusing to touch it: "
            "choose another -o"
        )
    if overwrite or state in ("missing", "empty", "creating"):
        return create_store(path, attrs, dataset.paths, dataset.labels, overwrite=overwrite)
    existing = open_store(path, mode="r+")
    if list(existing.group["images/path"][:]) != dataset.paths or not np.array_equal(
        existing.labels(), dataset.labels
    ):
        raise ActstatsError(
            f"store {path}: was collected from a different file list; pass "
            "--overwrite to replace it or choose another -o"
        )
    for key in _IDENTITY + (("chunk_size",) if chunk_size_given else ()):
        if existing.attrs.get(key) != attrs.get(key):
            raise ActstatsError(
                f"store {path}: was collected with a different {key}; pass --overwrite to "
                "replace it or choose another -o"
            )
    _refuse_changed_files(existing, dataset)
    return existing


def _refuse_changed_files(existing: ActivationStore, dataset: Dataset) -> None:
    """Raise if a file read by a finished chunk has another size or mtime now."""
    images = existing.group["images"]
    if "size" not in images:  # a store from before sizes were recorded
        return
    recorded = np.stack([images["size"][:], images["mtime_ns"][:]], axis=1)
    finished = np.repeat(existing.done, existing.chunk_size)[: len(recorded)]
    changed = [
        dataset.paths[i]
        for i in np.flatnonzero(finished & (recorded[:, 0] >= 0))
        if file_stat(dataset.absolute(int(i))) != tuple(int(v) for v in recorded[i])
    ]
    if changed:
        shown = ", ".join(show_name(p) for p in changed[:3])
        more = f" (+{len(changed) - 3} more)" if len(changed) > 3 else ""
        raise ActstatsError(
            f"store {existing.path}: {len(changed)} file(s) changed since they were collected: "
            f"{shown}{more}; restore them, or pass --overwrite to collect again"
        )


def _rows_in(chunks: list[int], attrs: dict[str, Any]) -> int:
    size, n = int(attrs["chunk_size"]), int(attrs["n_images"])
    return sum(min(n, (c + 1) * size) - c * size for c in chunks)


def _images_done(
    progress: Progress | None, attrs: dict[str, Any], pending: list[int]
) -> Callable[[int], None]:
    """``advance(rows)`` for the graph: reports images done so far (resumed ones included)."""
    total = int(attrs["n_images"])
    done = total - _rows_in(pending, attrs)
    if progress is None:
        return lambda rows: None
    progress(done, total)

    def advance(rows: int) -> None:
        nonlocal done
        done += rows
        progress(done, total)

    return advance


def _finish(
    target: ActivationStore, dataset: Dataset, written: int, seconds: float
) -> CollectSummary:
    """Record skipped files and mark the store complete (idempotent)."""
    reasons = target.group["images/error"][:]
    errors = [(f"{folder}/", "empty class folder") for folder in dataset.empty_classes]
    errors += [(f"{folder}/", "unreadable folder") for folder in dataset.unreadable_classes]
    errors += [(dataset.paths[i], str(reasons[i])) for i in np.flatnonzero(reasons != "")]
    finish_store(target, errors)
    clipped = target.clipped()
    if clipped:
        warnings.warn(
            f"store {target.path}: {clipped:,} float16 activation values exceeded +-65504 and "
            "were clipped to it (rows in images/clipped); collect with --dtype float32 for "
            "exact values",
            stacklevel=4,
        )
    return CollectSummary(
        store=target.path,
        n_images=int(target.ok().sum()),
        n_classes=len(dataset.class_names),
        skipped=dict(Counter(r for _, r in errors)),
        seconds=seconds,
        chunks_written=written,
        errors=errors,
        clipped=clipped,
    )
