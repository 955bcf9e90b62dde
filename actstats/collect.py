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

Threads: forward passes are serialized per process and device by a lock, so
torch's intra-op pool serves one pass at a time; the other dask threads
decode the next partitions meanwhile. The local default is the threaded
scheduler with 2 threads on a CPU device (decode one partition ahead) and
every core but one on CUDA (decoding is then the bottleneck). The device lock
is only taken by forward tasks, so decoding chunk k+1 overlaps the forward of
chunk k.

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
import dataclasses
import functools
import os
import threading
import time
import uuid
import warnings
import weakref
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dask
import numpy as np
import torch
from dask.callbacks import Callback
from torchvision.transforms.v2.functional import pil_to_tensor

import actstats
from actstats.data import (
    BadImageError,
    Dataset,
    decode_jpegs,
    discover,
    jpeg_bytes,
    load_image,
    read_class_list,
)
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
    #: Summed task seconds by stage (``decode`` in the dask threads, ``device_decode``,
    #: ``forward`` -- device work, reductions and copies back --, ``write``,
    #: ``lock_wait``); stages overlap, so they add up to more than ``seconds``.
    stage_seconds: dict[str, float] = field(default_factory=dict)


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
    decode: str = "auto",
) -> CollectSummary:
    """Write the activations of ``root/<class>/*`` at ``layers`` into a zarr store.

    Rerunning the same call on a partly written store resumes it; a store made
    with another model, weights, layers, reductions, preprocessing, dtype or
    file list is refused unless ``overwrite``. ``network`` passes an already
    loaded :class:`~actstats.network.Network` (then ``model``, ``weights`` and
    ``device`` are ignored). ``store`` is a local path or an fsspec URL. See
    the module docstring for scheduling.

    ``decode``: ``cpu`` decodes with PIL in the dask threads; ``gpu`` decodes
    plain JPEGs batched with ``torchvision.io.decode_jpeg`` on the network's
    device (any other file, and any file it fails on, takes the PIL path, so
    bad files are named the same); ``mixed`` does every other batch each way;
    ``auto`` is ``mixed`` on CUDA, ``cpu`` otherwise. The device decoder's
    pixels may differ from PIL's by a few levels (nvjpeg's IDCT and chroma
    upsampling, float resize), so the choice is recorded in ``attrs["decode"]``
    but a store may be resumed with another one.
    """
    start = time.perf_counter()
    store = os.fspath(store)
    if is_process_local(store) and (scheduler not in (None, *_LOCAL_SCHEDULERS) or workers):
        raise ActstatsError(
            f"store {store}: memory:// lives in this process only; dask workers need a "
            "shared path or object store URL"
        )
    if dtype not in ("float16", "float32"):
        raise ActstatsError(f"--dtype {dtype}: use float16 or float32")
    if decode not in DECODERS:
        raise ActstatsError(f"--decode {decode}: use {', '.join(DECODERS)}")
    if batch_size < 1 or (chunk_size is not None and chunk_size < 1):
        raise ActstatsError("--batch-size and --chunk-size must be at least 1")
    dataset = discover(root, classes=read_class_list(classes), per_class=per_class)
    net = network or load_network(model, weights, device=device)
    if bf16 and net.device.type != "cuda":
        warnings.warn("--bf16: autocast needs a CUDA device; running in float32", stacklevel=2)
        bf16 = False
    if decode == "auto":
        decode = "mixed" if net.device.type == "cuda" else "cpu"
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
        "decode": decode,
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
        decode,
        uuid.uuid4().hex,
    )
    stages: Counter[str] = Counter()
    with _progress_bar(
        progress, len(dataset.paths), int(len(dataset.paths) - _rows_in(pending, target.attrs))
    ) as advance:
        _run(pending, job, net, advance, scheduler, workers, stages)
    summary = _finish(target, dataset, len(pending), time.perf_counter() - start)
    return dataclasses.replace(summary, stage_seconds=dict(stages))


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
#: ``--decode`` values; ``auto`` is ``mixed`` on CUDA and ``cpu`` elsewhere.
DECODERS = ("auto", "cpu", "gpu", "mixed")


@dataclass(frozen=True)
class _Job:
    """What a task needs besides the network and its chunk index (small, picklable).

    ``decode``: ``cpu`` (PIL in the dask threads), ``gpu`` (the dask threads
    only read JPEG bytes; the forward task decodes them batched with
    ``torchvision.io.decode_jpeg`` on the network's device) or ``mixed``
    (every other batch each way, so CPU threads and the device decoder both work).
    """

    store: str
    root: str
    attrs: dict[str, Any]
    preprocessing: Preprocessing
    batch_size: int
    decode: str = "cpu"
    run: str = ""  # unique per collect call: keys the file-name cache


@dataclass(frozen=True)
class _ChunkResult:
    chunk: int
    rows: int
    seconds: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class _Raw:
    """A JPEG left for the device decoder: its path (for the PIL fallback) and bytes."""

    path: str
    data: torch.Tensor


@dataclass(frozen=True)
class _Decoded:
    """One batch of a chunk out of a decode task.

    ``items[i]`` is a (3, crop, crop) uint8 tensor (decoded and resized on the
    CPU), a :class:`_Raw` (decoded later on the device) or ``None`` (a bad
    file, ``reasons[i]`` says why).
    """

    items: list[torch.Tensor | _Raw | None]
    reasons: list[str]
    seconds: float


def _graph(pending: list[int], job: _Job, ref: _NetworkRef) -> list[Any]:
    """Per chunk: one decode task per batch (parallel decoding) feeding one forward task."""
    size, n = int(job.attrs["chunk_size"]), int(job.attrs["n_images"])
    tasks = []
    for c in pending:
        rows = min(n, (c + 1) * size) - c * size
        decoded = [
            dask.delayed(_decode_batch)(job, c, b, dask_key_name=f"decode-{c}-{b}")
            for b in range(0, rows, job.batch_size)
        ]
        tasks.append(
            dask.delayed(_forward_chunk)(ref, decoded, c, job, dask_key_name=f"forward-{c}")
        )
    return tasks


def _geometry(p: Preprocessing) -> Any:
    """The resize and center crop of ``p.transform()``, on (3, H, W) uint8 tensors.

    Normalization (the rest of ``p.transform()``) runs on the device, on the
    whole batch (:func:`_normalize`): the same operations in the same order.
    """
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import v2 as T  # noqa: N812 - torchvision convention

    return T.Compose(
        [
            T.Resize(p.resize, interpolation=InterpolationMode(p.interpolation), antialias=True),
            T.CenterCrop(p.crop),
        ]
    )


def _normalize(x: torch.Tensor, p: Preprocessing) -> torch.Tensor:
    from torchvision.transforms.v2 import functional as F  # noqa: N812

    return F.normalize(F.to_dtype(x, torch.float32, scale=True), list(p.mean), list(p.std))


def _decode_batch(job: _Job, chunk: int, start: int) -> _Decoded:
    """Decode (or, for the device decoder, read) one batch of a chunk.

    The file names come from the store's ``images/path`` chunk, not the graph.
    """
    t0 = time.perf_counter()
    size = int(job.attrs["chunk_size"])
    names = _chunk_names(job.store, job.run, chunk, size)[start : start + job.batch_size]
    on_device = job.decode == "gpu" or (
        job.decode == "mixed" and (start // job.batch_size) % 2 == 1
    )
    geometry = _geometry(job.preprocessing)
    items: list[torch.Tensor | _Raw | None] = []
    reasons = []
    for name in names:
        path = str(Path(job.root) / str(name))
        data = jpeg_bytes(path) if on_device else None
        if data is not None:
            items.append(_Raw(path, data))
            reasons.append("")
            continue
        try:
            items.append(geometry(pil_to_tensor(load_image(path))))
            reasons.append("")
        except BadImageError as bad:
            items.append(None)
            reasons.append(bad.reason)
    return _Decoded(items, reasons, time.perf_counter() - t0)


@functools.lru_cache(maxsize=64)
def _chunk_names(store: str, run: str, chunk: int, size: int) -> np.ndarray:
    """A chunk's file names, read once per run (opening a store costs ~20 ms).

    ``run`` is unused in the body: it keys the cache, so a new run at the same
    ``store`` path never sees the previous run's names.
    """
    return open_store(store).group["images/path"][chunk * size : (chunk + 1) * size]


def _device_inputs(
    net: Network, items: list[torch.Tensor | _Raw], geometry: Any, crop: int
) -> tuple[torch.Tensor, list[bool], list[str]]:
    """A (n, 3, crop, crop) uint8 batch on the device, plus which items made it in.

    :class:`_Raw` items are decoded on the device (batched; on an error one by
    one, then through PIL, which names a bad file's reason).
    """
    dev = net.device
    pin = dev.type == "cuda"
    keep, reasons = [True] * len(items), [""] * len(items)
    pixels: list[torch.Tensor | None] = list(items)  # type: ignore[arg-type]
    raw = [i for i, it in enumerate(items) if isinstance(it, _Raw)]
    if raw:
        try:
            decoded = decode_jpegs([items[i].data for i in raw], dev)  # type: ignore[union-attr]
        except Exception:  # one bad file fails the batch: go one by one
            decoded = [None] * len(raw)
        for i, img in zip(raw, decoded, strict=True):
            item = items[i]
            assert isinstance(item, _Raw)
            if img is None:
                try:
                    img = decode_jpegs([item.data], dev)[0]
                except Exception:  # PIL decides what is wrong
                    try:
                        img = pil_to_tensor(load_image(item.path))
                    except BadImageError as bad:
                        keep[i], reasons[i] = False, bad.reason
                        pixels[i] = None
                        continue
            pixels[i] = geometry(img)
    x = torch.empty((sum(keep), 3, crop, crop), dtype=torch.uint8, device=dev)
    kept = [p for p in pixels if p is not None]
    host = [j for j, p in enumerate(kept) if p.device.type == "cpu"]
    on_dev = [j for j, p in enumerate(kept) if p.device.type != "cpu"]
    if host:
        batch = torch.stack([kept[j] for j in host])
        if pin:
            batch = batch.pin_memory()
        batch = batch.to(dev, non_blocking=True)
        if len(host) == len(kept):
            x = batch
        else:
            x[host] = batch
    if on_dev:
        batch = torch.stack([kept[j].to(dev) for j in on_dev])
        if len(on_dev) == len(kept):
            x = batch
        else:
            x[on_dev] = batch
    return x, keep, reasons


def _forward_chunk(
    ref: _NetworkRef, decoded: list[_Decoded], chunk: int, job: _Job
) -> _ChunkResult:
    """Forward, reduce and write one partition, then set its done flag.

    Per batch: uint8 pixels to the device, normalize there, forward, reduce
    every layer on the device into one (n, sum of dims) tensor in the store
    dtype, copied back once (pinned, non-blocking, read one batch later so
    the device never waits for the host).
    """
    seconds = Counter({"decode": sum(d.seconds for d in decoded)})
    items = [it for d in decoded for it in d.items]
    reasons = [r for d in decoded for r in d.reasons]
    net = ref.get()
    _prepare(net)
    ok = np.array([it is not None for it in items])
    dtype = np.dtype(job.attrs["dtype"])
    tdtype = torch.float16 if dtype == np.float16 else torch.float32
    layers = {e["name"]: parse_reduction(e["reduce"]) for e in job.attrs["layers"]}
    dims = [int(e["dim"]) for e in job.attrs["layers"]]
    rows = {
        e["name"]: np.full((len(ok), e["dim"]), np.nan, dtype=dtype) for e in job.attrs["layers"]
    }
    good = np.flatnonzero(ok)
    cuda = net.device.type == "cuda"
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if job.attrs.get("autocast") == "bfloat16" and cuda
        else contextlib.nullcontext()
    )
    p = job.preprocessing
    geometry = _geometry(p)
    fmt = torch.channels_last if cuda else torch.contiguous_format

    def store(pending: tuple[np.ndarray, torch.Tensor, Any]) -> None:
        sel, out, event = pending
        if event is not None:
            event.synchronize()
        flat = out.numpy()
        offset = 0
        for name, dim in zip(layers, dims, strict=True):
            rows[name][sel] = flat[:, offset : offset + dim]
            offset += dim

    t_wait = time.perf_counter()
    with _device_lock(net.device), torch.inference_mode():
        t0 = time.perf_counter()
        seconds["lock_wait"] = t0 - t_wait
        pending = None
        for b in range(0, len(good), job.batch_size):
            sel = good[b : b + job.batch_size]
            td = time.perf_counter()
            x, keep, why = _device_inputs(net, [items[i] for i in sel], geometry, p.crop)
            seconds["device_decode"] += time.perf_counter() - td
            for i, k, r in zip(sel, keep, why, strict=True):
                if not k:
                    ok[i], reasons[i] = False, r
            sel = sel[np.asarray(keep, dtype=bool)]
            if len(sel):
                x = _normalize(x, p).contiguous(memory_format=fmt)
                with autocast:
                    acts = net.activations(x, list(layers))
                    flat = torch.cat(
                        [red(acts[n]).float().flatten(1) for n, red in layers.items()], dim=1
                    )
                flat = flat.to(tdtype)
                event = None
                if cuda:
                    out = torch.empty(flat.shape, dtype=tdtype, pin_memory=True)
                    out.copy_(flat, non_blocking=True)
                    event = torch.cuda.Event()
                    event.record()
                else:
                    out = flat
                if pending is not None:
                    store(pending)
                pending = (sel, out, event)
        if pending is not None:
            store(pending)
        seconds["forward"] = time.perf_counter() - t0 - seconds["device_decode"]
    tw = time.perf_counter()
    write_chunk(open_store(job.store, mode="r+"), chunk, rows, ok, reasons)
    seconds["write"] = time.perf_counter() - tw
    return _ChunkResult(chunk, len(ok), dict(seconds))


_PREPARED: weakref.WeakKeyDictionary[torch.nn.Module, bool] = weakref.WeakKeyDictionary()


def _prepare(net: Network) -> None:
    """On CUDA, once per module: cuDNN autotuning and channels_last weights."""
    if net.device.type != "cuda" or net.module in _PREPARED:
        return
    torch.backends.cudnn.benchmark = True
    net.module.to(memory_format=torch.channels_last)
    _PREPARED[net.module] = True


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
#: dask's in-process schedulers by the names ``fit`` accepts too; anything else is an address.
_LOCAL_SCHEDULERS = {"threads": "threads", "sync": "sync", "synchronous": "sync"}


def _run(
    pending: list[int],
    job: _Job,
    net: Network,
    advance: Any,
    scheduler: str | None,
    workers: int | None,
    stages: Counter[str],
) -> None:
    """Compute the graph on a local scheduler (threads, or sync for debugging) or a cluster."""
    if not pending:
        return
    if workers is None and (scheduler is None or scheduler in _LOCAL_SCHEDULERS):
        local = _LOCAL_SCHEDULERS.get(scheduler or "threads")
        extra = {"num_workers": _threads(net.device)} if local == "threads" else {}
        with _ProgressCallback(advance, stages):
            dask.compute(*_graph(pending, job, _NetworkRef(net)), scheduler=local, **extra)
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
                    result = future.result()
                    stages.update(result.seconds)
                    advance(result.rows)
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

    def __init__(self, advance: Any, stages: Counter[str]) -> None:
        super().__init__()
        self._advance = advance
        self._stages = stages

    def _posttask(self, key: Any, result: Any, dsk: Any, state: Any, worker_id: Any) -> None:
        if isinstance(result, _ChunkResult):
            self._stages.update(result.seconds)
            self._advance(result.rows)


def _threads(device: torch.device) -> int:
    """Threaded-scheduler threads: 2 on a CPU device (torch's own pool does the
    forward; one thread decodes ahead), else every core but one (PIL and
    torch release the GIL while decoding and resizing)."""
    if device.type == "cpu":
        return 2
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 2
    return max(2, cores - 1)


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
