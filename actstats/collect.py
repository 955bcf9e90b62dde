"""The collect pipeline: class folders -> activation store, resumable.

One dask graph over partitions of the file list, one partition per store
chunk: ``decode-c`` (read, convert to RGB, preprocess) feeds ``forward-c``
(batched forward under ``torch.inference_mode``, reduction, whole-chunk
region writes, then the chunk's done flag). Tasks share no chunk, so no
write locks; a rerun skips chunks whose flag is set, and since each chunk is
computed the same way whenever it runs, a resumed store equals an
uninterrupted one.

Threads: forward passes are serialized per process and device by a lock, so
torch's intra-op pool serves one pass at a time; the other dask threads
decode the next partitions meanwhile. The local default is the threaded
scheduler with 2 threads on a CPU device (decode one partition ahead) and up
to 8 on CUDA (decoding is then the bottleneck).

Distributed (see :mod:`actstats.cluster`): ``workers=N`` starts a
``LocalCluster`` of N processes (``LocalCUDACluster``, one per GPU, on CUDA)
and ``scheduler=ADDRESS`` joins a running cluster. A ``NetworkPlugin`` loads
the network once per worker; tasks carry only the store location and a chunk
index (file names are read from the store), so the graph stays small for a
million images. Workers must reach the data root and the store at the same
path or URL. A worker that dies loses only its unfinished chunks: dask
retries them elsewhere, and if it gives up the run fails with "rerun to
resume" and a rerun computes exactly the chunks without a done flag.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dask
import numpy as np
import torch
from dask.callbacks import Callback

import actstats
from actstats.data import BadImageError, Dataset, discover, load_image, read_class_list
from actstats.errors import ActstatsError
from actstats.network import Network, load_network
from actstats.preprocessing import Preprocessing
from actstats.reduce import Reduction, parse_reduction
from actstats.store import (
    STORE_VERSION,
    ActivationStore,
    create_store,
    default_chunk_size,
    is_process_local,
    open_store,
    resolve_location,
    store_exists,
    write_chunk,
    write_errors,
)

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


def collect(
    root: str | Path,
    store: str | os.PathLike,
    *,
    model: str = "vgg16",
    weights: str | None = None,
    layers: Sequence[str] | None = None,
    reduce: dict[str, str] | None = None,
    classes: str | Sequence[str] | None = None,
    per_class: int | None = None,
    batch_size: int = 64,
    device: str = "auto",
    dtype: str = "float32",
    chunk_size: int | None = None,
    overwrite: bool = False,
    scheduler: str | None = None,
    workers: int | None = None,
    progress: bool = True,
    network: Network | None = None,
    bf16: bool = False,
) -> CollectSummary:
    """Write the activations of ``root/<class>/*`` at ``layers`` into a zarr store.

    Rerunning the same call on a partly written store resumes it; a store made
    with another model, weights, layers, reductions, preprocessing, dtype or
    file list is refused unless ``overwrite``. ``network`` passes an already
    loaded :class:`~actstats.network.Network` (then ``model``, ``weights`` and
    ``device`` are ignored). ``store`` is a local path or an fsspec URL. See
    the module docstring for scheduling.
    """
    start = time.perf_counter()
    store = os.fspath(store)
    if is_process_local(store) and (scheduler is not None or workers is not None):
        raise ActstatsError(
            f"store {store}: memory:// lives in this process only; dask workers need a "
            "shared path or object store URL"
        )
    if dtype not in ("float16", "float32"):
        raise ActstatsError(f"--dtype {dtype}: use float16 or float32")
    if batch_size < 1 or (chunk_size is not None and chunk_size < 1):
        raise ActstatsError("--batch-size and --chunk-size must be at least 1")
    dataset = discover(root, classes=read_class_list(classes), per_class=per_class)
    net = network or load_network(model, weights, device=device)
    if bf16 and net.device.type != "cuda":
        warnings.warn("--bf16: autocast needs a CUDA device; running in float32", stacklevel=2)
        bf16 = False
    plan = plan_layers(net, layers, reduce)
    row_bytes = max(entry["dim"] for entry in plan) * np.dtype(dtype).itemsize
    attrs = {
        "version": STORE_VERSION,
        "actstats_version": actstats.__version__,
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
        "root": str(Path(root).resolve()),
        "autocast": "bfloat16" if bf16 else None,
    }
    target = _open_or_create(
        store, attrs, dataset, overwrite=overwrite, chunk_size_given=chunk_size is not None
    )
    done = target.done
    pending = [c for c in range(len(done)) if not done[c]]
    job = _Job(
        resolve_location(store),
        str(dataset.root.resolve()),
        target.attrs,
        net.preprocessing,
        batch_size,
    )
    with _progress_bar(
        progress, len(dataset.paths), int(len(dataset.paths) - _rows_in(pending, target.attrs))
    ) as advance:
        _run(pending, job, net, advance, scheduler, workers)
    return _finish(target, dataset, len(pending), time.perf_counter() - start)


def plan_layers(
    net: Network, layers: Sequence[str] | None, reduce: dict[str, str] | None
) -> list[dict[str, Any]]:
    """The store's ``layers`` entries, shallow to deep: name, module, reduce, shape, dim.

    Defaults: :meth:`Network.default_layers`; ``grid:2`` for conv layers at
    least 2x2 (``mean`` below that), ``full`` for fc layers.
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
        if name in reduce:
            reduction = parse_reduction(reduce[name])
        elif len(shape) == 3:
            reduction = Reduction("grid", 2) if min(shape[1:]) >= 2 else Reduction("mean")
        else:
            reduction = Reduction("full")
        reduction.check(name, shape)
        plan.append(
            {
                "name": name,
                "module": net.module_name(name),
                "reduce": str(reduction),
                "shape": list(shape),
                "dim": reduction.dim(shape),
            }
        )
    return plan


# ------------------------------------------------------------------ the store
def _open_or_create(
    path: str, attrs: dict[str, Any], dataset: Dataset, *, overwrite: bool, chunk_size_given: bool
) -> ActivationStore:
    """Resume a matching store, refuse a different one, or create a new one."""
    if overwrite or not store_exists(path):
        return create_store(path, attrs, dataset.paths, dataset.labels, overwrite=overwrite)
    try:
        existing = open_store(path, mode="r+")
    except ActstatsError:
        raise ActstatsError(
            f"store {path}: exists and is not an actstats store; pass "
            "--overwrite to replace it or choose another -o"
        ) from None
    if list(existing.group["images/path"][:]) != dataset.paths or not np.array_equal(
        existing.group["images/label"][:], dataset.labels
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
    return existing


def _rows_in(chunks: list[int], attrs: dict[str, Any]) -> int:
    size, n = int(attrs["chunk_size"]), int(attrs["n_images"])
    return sum(min(n, (c + 1) * size) - c * size for c in chunks)


def _finish(
    target: ActivationStore, dataset: Dataset, written: int, seconds: float
) -> CollectSummary:
    """Record skipped files and mark the store complete (idempotent)."""
    group = target.group
    if not group["images/done"][:].all():
        raise ActstatsError(f"store {target.path}: some chunks were not written; rerun to resume")
    reasons = group["images/error"][:]
    errors = [(f"{folder}/", "empty class folder") for folder in dataset.empty_classes]
    errors += [(dataset.paths[i], str(reasons[i])) for i in np.flatnonzero(reasons != "")]
    write_errors(target, errors)
    target.attrs["complete"] = True
    group.attrs["actstats"] = target.attrs
    return CollectSummary(
        store=target.path,
        n_images=int(group["images/ok"][:].sum()),
        n_classes=len(dataset.class_names),
        skipped=dict(Counter(r for _, r in errors)),
        seconds=seconds,
        chunks_written=written,
        errors=errors,
    )


# ------------------------------------------------------------------ the graph
@dataclass(frozen=True)
class _Job:
    """What a task needs besides the network and its chunk index (small, picklable)."""

    store: str
    root: str
    attrs: dict[str, Any]
    preprocessing: Preprocessing
    batch_size: int


@dataclass(frozen=True)
class _ChunkResult:
    chunk: int
    rows: int


def _graph(pending: list[int], job: _Job, ref: _NetworkRef) -> list[Any]:
    tasks = []
    for c in pending:
        decoded = dask.delayed(_decode_chunk)(job, c, dask_key_name=f"decode-{c}")
        tasks.append(
            dask.delayed(_forward_chunk)(ref, decoded, c, job, dask_key_name=f"forward-{c}")
        )
    return tasks


def _decode_chunk(job: _Job, chunk: int) -> tuple[list[torch.Tensor | None], list[str]]:
    """Decode and preprocess one partition; a bad file gives ``None`` and its reason.

    The file names come from the store's ``images/path`` chunk, not the graph.
    """
    size = int(job.attrs["chunk_size"])
    names = open_store(job.store).group["images/path"][chunk * size : (chunk + 1) * size]
    transform = job.preprocessing.transform()
    tensors: list[torch.Tensor | None] = []
    reasons = []
    for name in names:
        try:
            tensors.append(transform(load_image(Path(job.root) / str(name))))
            reasons.append("")
        except BadImageError as bad:
            tensors.append(None)
            reasons.append(bad.reason)
    return tensors, reasons


def _forward_chunk(
    ref: _NetworkRef, decoded: tuple[list[torch.Tensor | None], list[str]], chunk: int, job: _Job
) -> _ChunkResult:
    """Forward, reduce and write one partition, then set its done flag."""
    tensors, reasons = decoded
    net = ref.get()
    ok = np.array([t is not None for t in tensors])
    dtype = np.dtype(job.attrs["dtype"])
    layers = {e["name"]: parse_reduction(e["reduce"]) for e in job.attrs["layers"]}
    rows = {
        e["name"]: np.full((len(ok), e["dim"]), np.nan, dtype=dtype) for e in job.attrs["layers"]
    }
    good = np.flatnonzero(ok)
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if job.attrs.get("autocast") == "bfloat16"
        else contextlib.nullcontext()
    )
    with _device_lock(net.device), torch.inference_mode(), autocast:
        for b in range(0, len(good), job.batch_size):
            sel = good[b : b + job.batch_size]
            x = torch.stack([tensors[i] for i in sel]).to(net.device, non_blocking=True)
            acts = net.activations(x, list(layers))
            for name, reduction in layers.items():
                rows[name][sel] = reduction(acts[name]).float().cpu().numpy()
    write_chunk(open_store(job.store, mode="r+"), chunk, rows, ok, reasons)
    return _ChunkResult(chunk, len(ok))


_LOCKS: dict[str, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


def _device_lock(device: torch.device) -> threading.Lock:
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(str(device), threading.Lock())


class _NetworkRef:
    """The network for a task: in-process a plain reference; pickled, a lookup key.

    On a dask.distributed worker the key names the network that
    :class:`~actstats.cluster.NetworkPlugin` loaded there once, so tasks never
    carry (or reload) the weights.
    """

    def __init__(self, network: Network | None, key: str = "") -> None:
        self._network = network
        self._key = key

    def get(self) -> Network:
        if self._network is None:
            from actstats.cluster import worker_network

            self._network = worker_network(self._key)
        return self._network

    def __reduce__(self) -> tuple[Any, ...]:
        if not self._key:
            raise TypeError("register the network on the cluster before sending tasks")
        return (_NetworkRef, (None, self._key))


# ----------------------------------------------------------------- execution
def _run(
    pending: list[int],
    job: _Job,
    net: Network,
    advance: Any,
    scheduler: str | None,
    workers: int | None,
) -> None:
    """Compute the graph on the threaded scheduler or a dask.distributed cluster."""
    if not pending:
        return
    if scheduler is None and workers is None:
        threads = 2 if net.device.type == "cpu" else min(8, os.cpu_count() or 1)
        with _ProgressCallback(advance):
            dask.compute(
                *_graph(pending, job, _NetworkRef(net)), scheduler="threads", num_workers=threads
            )
        return
    from distributed import KilledWorker, as_completed

    from actstats.cluster import connect, register_network

    with connect(scheduler, workers, cuda=net.device.type == "cuda") as client:
        ref = _NetworkRef(None, register_network(client, net))
        futures = client.compute(_graph(pending, job, ref))
        lost = 0
        try:
            for future in as_completed(futures):
                try:
                    advance(future.result().rows)
                except KilledWorker:  # dask gave up on it; the other chunks go on
                    lost += 1
        finally:
            client.cancel(futures)
    if lost:
        raise ActstatsError(
            f"collect: {lost} chunk(s) lost with a dask worker that died; the others are "
            "saved: rerun the same command to resume"
        )


class _ProgressCallback(Callback):
    """Advance the progress bar as forward tasks finish (threaded scheduler)."""

    def __init__(self, advance: Any) -> None:
        super().__init__()
        self._advance = advance

    def _posttask(self, key: Any, result: Any, dsk: Any, state: Any, worker_id: Any) -> None:
        if isinstance(result, _ChunkResult):
            self._advance(result.rows)


@contextlib.contextmanager
def _progress_bar(enabled: bool, total: int, completed: int) -> Iterator[Any]:
    """A rich bar with images/s; yields ``advance(n_images)``."""
    if not enabled:
        yield lambda n: None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn("collect"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[rate]} images/s"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, transient=False) as bar:
        task = bar.add_task("collect", total=total, completed=completed, rate="-")
        t0, done = time.perf_counter(), 0

        def advance(n: int) -> None:
            nonlocal done
            done += n
            rate = done / max(1e-9, time.perf_counter() - t0)
            bar.update(task, advance=n, rate=f"{rate:,.1f}")

        yield advance
