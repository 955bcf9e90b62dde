"""The collect graph: decode tasks feeding one forward task per store chunk, and its run.

Per chunk, ``decode-c-b`` tasks (one per batch: read, convert to RGB, resize and
crop to uint8; or, for the device decoder, only read JPEG bytes) feed
``forward-c`` (uint8 to the device, decode there if needed, normalize, batched
forward under ``torch.inference_mode``, reductions on the device, one copy back per
batch, whole-chunk region writes, then the chunk's done flag). Tasks carry only the
store location and a chunk index (file names are read from the store), so the graph
stays small for a million images. :func:`run_graph` computes it on a local
scheduler or a dask.distributed cluster (:mod:`actstats.pipeline.cluster`).
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dask
import numpy as np
import torch
from dask.callbacks import Callback
from torchvision.transforms.v2.functional import pil_to_tensor

from actstats.errors import ActstatsError
from actstats.io.data import BadImageError, decode_jpegs, file_stat, jpeg_bytes, load_image
from actstats.io.paths import decode_name
from actstats.io.store import open_store, write_chunk
from actstats.net.network import Network
from actstats.net.preprocessing import Preprocessing
from actstats.net.reduce import stored_reduction
from actstats.net.rows import rows_function
from actstats.pipeline.schedule import LOCAL_SCHEDULERS, is_local

__all__ = [
    "DECODERS",
    "ChunkResult",
    "Job",
    "NetworkRef",
    "build_graph",
    "geometry",
    "local_threads",
    "normalize",
    "prepare_device",
    "resize_by_size",
    "run_graph",
]

#: ``--decode`` values; ``auto`` is ``mixed`` on CUDA and ``cpu`` elsewhere.
DECODERS = ("auto", "cpu", "gpu", "mixed")


@dataclass(frozen=True)
class Job:
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
    compile: bool = False  # torch.compile the per-batch rows function (actstats.net.rows)


@dataclass(frozen=True)
class ChunkResult:
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
    stats: list[tuple[int, int]] = field(default_factory=list)  # (size, mtime_ns) per file


def build_graph(pending: list[int], job: Job, ref: NetworkRef) -> list[Any]:
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


def geometry(p: Preprocessing) -> Callable[[torch.Tensor], torch.Tensor]:
    """The resize and center crop of ``p.transform()``, on (..., 3, H, W) uint8 tensors.

    Normalization (the rest of ``p.transform()``) runs on the device, on the
    whole batch (:func:`normalize`): the same operations in the same order.
    Plain functions, not ``nn.Module`` transforms: the decode threads must not call
    modules while the forward thread FX-traces the network for ``--compile``
    (tracing patches ``nn.Module.__call__`` process-wide).
    """
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.v2 import functional as F  # noqa: N812 - torchvision convention

    interpolation = InterpolationMode(p.interpolation)

    def resize_crop(img: torch.Tensor) -> torch.Tensor:
        img = F.resize(img, [p.resize], interpolation=interpolation, antialias=True)
        return F.center_crop(img, [p.crop])

    return resize_crop


def normalize(x: torch.Tensor, p: Preprocessing) -> torch.Tensor:
    from torchvision.transforms.v2 import functional as F  # noqa: N812

    return F.normalize(F.to_dtype(x, torch.float32, scale=True), list(p.mean), list(p.std))


def _decode_batch(job: Job, chunk: int, start: int) -> _Decoded:
    """Decode (or, for the device decoder, read) one batch of a chunk.

    The file names come from the store's ``images/path`` chunk, not the graph.
    """
    t0 = time.perf_counter()
    size = int(job.attrs["chunk_size"])
    names = _chunk_names(job.store, job.run, chunk, size)[start : start + job.batch_size]
    on_device = job.decode == "gpu" or (
        job.decode == "mixed" and (start // job.batch_size) % 2 == 1
    )
    resize_crop = geometry(job.preprocessing)
    resize = job.preprocessing.resize
    items: list[torch.Tensor | _Raw | None] = []
    reasons, stats = [], []
    for name in names:
        path = str(Path(job.root) / decode_name(str(name)))
        stats.append(file_stat(path))
        data = jpeg_bytes(path, resize) if on_device else None
        if data is not None:
            items.append(_Raw(path, data))
            reasons.append("")
            continue
        try:
            items.append(resize_crop(pil_to_tensor(load_image(path, resize=resize))))
            reasons.append("")
        except BadImageError as bad:
            items.append(None)
            reasons.append(bad.reason)
    return _Decoded(items, reasons, time.perf_counter() - t0, stats)


@functools.lru_cache(maxsize=64)
def _chunk_names(store: str, run: str, chunk: int, size: int) -> np.ndarray:
    """A chunk's file names, read once per run (opening a store costs ~20 ms).

    ``run`` is unused in the body: it keys the cache, so a new run at the same
    ``store`` path never sees the previous run's names.
    """
    return open_store(store).group["images/path"][chunk * size : (chunk + 1) * size]


def _device_inputs(
    net: Network, items: list[torch.Tensor | _Raw], resize_crop: Any, crop: int
) -> tuple[torch.Tensor, list[bool], list[str]]:
    """A (n, 3, crop, crop) uint8 batch on the device, plus which items made it in.

    :class:`_Raw` items are decoded on the device (batched; on an error one by
    one, then through PIL, which names a bad file's reason), then resized and
    cropped once per size bucket (:func:`resize_by_size`).
    """
    dev = net.device
    pin = dev.type == "cuda"
    keep, reasons = [True] * len(items), [""] * len(items)
    pixels: list[torch.Tensor | None] = list(items)  # type: ignore[arg-type]
    raw = [i for i, it in enumerate(items) if isinstance(it, _Raw)]
    full_size: dict[int, torch.Tensor] = {}
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
            full_size[i] = img
    for i, img in resize_by_size(full_size, resize_crop).items():
        pixels[i] = img
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


def resize_by_size(
    images: dict[int, torch.Tensor], resize_crop: Callable[[torch.Tensor], torch.Tensor]
) -> dict[int, torch.Tensor]:
    """``resize_crop`` of every image, called once per (channels, height, width) bucket.

    Why: on a GPU a resize is a few kernel launches whatever the batch, so one
    call per bucket instead of per image (ImageNet's files are mostly 500x375 or
    375x500) keeps the launching thread from being the bottleneck. Interpolation
    is per image, so the pixels equal the per-image calls'.
    """
    buckets: dict[tuple[object, ...], list[int]] = {}
    for i, img in images.items():
        buckets.setdefault((str(img.device), *img.shape), []).append(i)
    out: dict[int, torch.Tensor] = {}
    for idx in buckets.values():
        out.update(zip(idx, resize_crop(torch.stack([images[i] for i in idx])), strict=True))
    return out


def _forward_chunk(ref: NetworkRef, decoded: list[_Decoded], chunk: int, job: Job) -> ChunkResult:
    """Forward, reduce and write one partition, then set its done flag.

    Per batch: uint8 pixels to the device, normalize there, forward, reduce
    every layer on the device into one (n, sum of dims) tensor in the store
    dtype, copied back once (pinned, non-blocking, read one batch later so
    the device never waits for the host).
    """
    seconds = Counter({"decode": sum(d.seconds for d in decoded)})
    items = [it for d in decoded for it in d.items]
    reasons = [r for d in decoded for r in d.reasons]
    file_stats = np.asarray([st for d in decoded for st in d.stats], dtype=np.int64)
    net = ref.get()
    prepare_device(net)
    ok = np.array([it is not None for it in items])
    dtype = np.dtype(job.attrs["dtype"])
    tdtype = torch.float16 if dtype == np.float16 else torch.float32
    layers = {e["name"]: stored_reduction(e) for e in job.attrs["layers"]}
    dims = [int(e["dim"]) for e in job.attrs["layers"]]
    rows = {
        e["name"]: np.full((len(ok), e["dim"]), np.nan, dtype=dtype) for e in job.attrs["layers"]
    }
    good = np.flatnonzero(ok)
    clipped = np.zeros(len(ok), dtype=np.int32)
    cuda = net.device.type == "cuda"
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if job.attrs.get("autocast") == "bfloat16" and cuda
        else contextlib.nullcontext()
    )
    rows_of = rows_function(net, layers, compile=job.compile, batch_size=job.batch_size)
    p = job.preprocessing
    resize_crop = geometry(p)
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
            x, keep, why = _device_inputs(net, [items[i] for i in sel], resize_crop, p.crop)
            seconds["device_decode"] += time.perf_counter() - td
            for i, k, r in zip(sel, keep, why, strict=True):
                if not k:
                    ok[i], reasons[i] = False, r
            sel = sel[np.asarray(keep, dtype=bool)]
            if len(sel):
                x = normalize(x, p).contiguous(memory_format=fmt)
                with autocast:
                    flat = rows_of(x)
                if tdtype == torch.float16:
                    clipped[sel] = _clip_float16(flat)
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
    write_chunk(
        open_store(job.store, mode="r+"),
        chunk,
        rows,
        ok,
        reasons,
        file_stats=file_stats.reshape(len(ok), 2),
        clipped=clipped,
    )
    seconds["write"] = time.perf_counter() - tw
    return ChunkResult(chunk, len(ok), dict(seconds))


_FLOAT16_MAX = float(torch.finfo(torch.float16).max)  # 65504


def _clip_float16(flat: torch.Tensor) -> np.ndarray:
    """Clip ``flat`` (rows, dims) in place to float16's finite range; count clipped values
    per row (a float16 store would otherwise hold ``inf`` with ``ok`` set)."""
    over = flat.abs() > _FLOAT16_MAX
    counts = over.sum(dim=1).to("cpu", torch.int32).numpy()
    flat.clamp_(-_FLOAT16_MAX, _FLOAT16_MAX)
    return counts


_PREPARED: weakref.WeakKeyDictionary[torch.nn.Module, bool] = weakref.WeakKeyDictionary()


def prepare_device(net: Network) -> None:
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


class NetworkRef:
    """The network for a task: in-process a plain reference; pickled, a lookup key.

    On a dask.distributed worker the key names the network that
    :class:`~actstats.pipeline.cluster.NetworkPlugin` loaded there once, so tasks never
    carry (or reload) the weights.
    """

    def __init__(self, network: Network | None, key: str = "") -> None:
        self._network = network
        self._key = key

    def get(self) -> Network:
        if self._network is None:
            from actstats.pipeline.cluster import worker_network

            self._network = worker_network(self._key)
        return self._network

    def __reduce__(self) -> tuple[Any, ...]:
        if not self._key:
            raise TypeError("register the network on the cluster before sending tasks")
        return (NetworkRef, (None, self._key))


# ----------------------------------------------------------------- execution
def run_graph(
    pending: list[int],
    job: Job,
    net: Network,
    advance: Callable[[int], None],
    scheduler: str | None,
    workers: int | None,
    stages: Counter[str],
) -> None:
    """Compute the graph on a local scheduler (threads, or sync for debugging) or a cluster.

    ``advance(rows)`` is called as each chunk finishes; ``stages`` sums the chunks'
    per-stage seconds.
    """
    if not pending:
        return
    if scheduler == "processes":
        raise ActstatsError(
            "collect --scheduler processes: the network would be loaded per task; use "
            "--workers N (a local cluster loads it once per process)"
        )
    if is_local(scheduler, workers):
        local = LOCAL_SCHEDULERS[scheduler or "threads"]
        extra = {"num_workers": local_threads(net.device)} if local == "threads" else {}
        with _ProgressCallback(advance, stages), host_threads_for(net.device):
            dask.compute(*build_graph(pending, job, NetworkRef(net)), scheduler=local, **extra)
        return
    from distributed import KilledWorker, as_completed

    from actstats.pipeline.cluster import connect, register_network

    with connect(scheduler, workers, cuda=net.device.type == "cuda") as client:
        ref = NetworkRef(None, register_network(client, net))
        futures = client.compute(build_graph(pending, job, ref))
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
    """Report finished forward tasks (threaded scheduler) to ``advance`` and ``stages``."""

    def __init__(self, advance: Callable[[int], None], stages: Counter[str]) -> None:
        super().__init__()
        self._advance = advance
        self._stages = stages

    def _posttask(self, key: Any, result: Any, dsk: Any, state: Any, worker_id: Any) -> None:
        if isinstance(result, ChunkResult):
            self._stages.update(result.seconds)
            self._advance(result.rows)


@contextlib.contextmanager
def host_threads_for(device: torch.device) -> Iterator[None]:
    """On an accelerator, one torch intra-op thread per calling thread while inside.

    Why: there the host only decodes and resizes, in :func:`local_threads` threads
    at once; each CPU resize would otherwise start a parallel region as wide as the
    machine (15 threads x 16 = 240 on 16 cores), as DataLoader workers avoid by
    running with ``torch.set_num_threads(1)``. On a CPU device torch's pool does
    the forward, so it is left alone.
    """
    if device.type == "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def local_threads(device: torch.device) -> int:
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
