"""Benchmark of ``actstats fit``'s streaming moments on a store laid out as ``collect`` writes it.

1. Throughput: fit's pass 1 (:func:`actstats.pipeline.fit.store_moments`: dask tasks of
   whole store chunks, the fused float64 kernel, tree merge) on a store with collect's
   DEFAULT layout (chunk rows from ``default_chunk_size`` for ``--batch`` 64, float32,
   each ``acts`` codec in turn) vs in-memory ``np.cov`` of the same rows as float64,
   same run, best of ``--repeats``. Goal ratio >= 0.8. Also the store size and a plain
   read of each codec (which codec collect should write).
2. Out of core: peak RSS of a child process running the same pass on stores of
   ``--big-n`` / 4 and ``--big-n`` rows (memory flat in N).

Rows are ``max(0, z @ W + 1)`` for Gaussian z: dense, correlated, ~16 % zeros, like
rectified, spatially averaged activations.

Usage: ``python benchmarks/fit.py [--label NAME] [--n 200000] [--d 256] [--big-n 800000]``
Writes ``benchmarks/results/fit-<label>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dask
import numpy as np
import zarr

from actstats.io.store import (
    DEFAULT_ACTS_CODEC,
    STORE_VERSION,
    create_store,
    default_chunk_size,
    finish_store,
    open_store,
    write_chunk,
)
from actstats.pipeline.fit import store_moments

RESULTS = Path(__file__).resolve().parent / "results"


def write_store(path: Path, n: int, d: int, chunk: int, codec: str, seed: int = 0) -> Path:
    """A one-class store with one float32 layer ``x`` of shape (n, d), written chunk by chunk
    through the store API (as ``collect`` writes)."""
    attrs = {
        "version": STORE_VERSION,
        "model": "benchmark",
        "weights": "none",
        "weights_sha256": None,
        "preprocessing": {"resize": 1, "crop": 1, "mean": [0.0], "std": [1.0]},
        "layers": [{"name": "x", "module": "x", "reduce": "full", "shape": [d], "dim": d}],
        "class_names": ["c"],
        "chunk_size": chunk,
        "n_images": n,
        "dtype": "float32",
        "complete": False,
    }
    store = create_store(
        path, attrs, [f"{i}.png" for i in range(n)], np.zeros(n, np.int32), acts_codec=codec
    )
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(d, d)).astype(np.float32) / np.sqrt(d)
    for index, s in enumerate(range(0, n, chunk)):
        e = min(s + chunk, n)
        x = np.maximum(rng.standard_normal((e - s, d), dtype=np.float32) @ mix + 1.0, 0.0)
        write_chunk(store, index, {"x": x}, np.ones(e - s, bool), [""] * (e - s))
    finish_store(store, [])
    return path


def stream_moments(path: Path):
    """Moments of all rows of ``acts/x``, through fit's pass 1 on the threaded scheduler."""
    return store_moments(path, scheduler="threads")["c"]["x"]


def _bytes_on_disk(path: Path) -> int:
    return sum(f.stat().st_size for f in (path / "acts").rglob("*") if f.is_file())


def _read_all(path: Path) -> None:
    arr = zarr.open_array(path / "acts" / "x", mode="r")
    step = 32 * 2**20 // (arr.shape[1] * arr.dtype.itemsize)
    for s in range(0, arr.shape[0], step):
        arr[s : s + step]


def _vm(field: str) -> int:
    """Bytes of a /proc/self/status field (VmHWM resets at exec, unlike ru_maxrss)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _child(path: str) -> None:
    base = _vm("VmRSS")  # after imports
    t = time.perf_counter()
    m = stream_moments(Path(path))
    peak = _vm("VmHWM")
    print(
        json.dumps(
            {
                "peak_rss_bytes": peak,
                "import_rss_bytes": base,
                "seconds": time.perf_counter() - t,
                "n": m.n,
            }
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--label", default=socket.gethostname())
    ap.add_argument("--note", default="", help="what else ran on the machine")
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--d", type=int, default=256)
    ap.add_argument("--batch", type=int, default=64, help="collect's --batch-size (default 64)")
    ap.add_argument("--codecs", default="none,lz4,zstd")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--big-n", type=int, default=800_000)
    ap.add_argument("--child", nargs=1, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        _child(a.child[0])
        return
    chunk = default_chunk_size(a.batch, a.d * 4)
    load = [os.getloadavg()[0]]
    codecs = {}
    with tempfile.TemporaryDirectory() as tmp:
        paths = {
            c: write_store(Path(tmp) / f"{c}.zarr", a.n, a.d, chunk, c) for c in a.codecs.split(",")
        }
        X = np.asarray(open_store(paths[DEFAULT_ACTS_CODEC]).acts("x")[:]).astype(np.float64)
        t_cov, cpu_cov = [], []
        for codec, path in paths.items():
            t_stream, t_read, cpu_stream, cpu_read = [], [], [], []
            for _ in range(a.repeats):  # interleaved, so load changes hit both alike
                _record(t_cov, cpu_cov, lambda: np.cov(X, rowvar=False))
                _record(t_stream, cpu_stream, lambda p=path: stream_moments(p))
                _record(t_read, cpu_read, lambda p=path: _read_all(p))
            codecs[codec] = {
                "bytes": _bytes_on_disk(path),
                "raw_bytes": a.n * a.d * 4,
                "read_seconds": min(t_read),
                "stream_seconds": min(t_stream),
                "read_cpu_seconds": min(cpu_read),
                "stream_cpu_seconds": min(cpu_stream),
            }
        m = stream_moments(paths[DEFAULT_ACTS_CODEC])
        err = float(np.max(np.abs(m.covariance(ddof=1) - np.cov(X, rowvar=False))))
        X = None  # free the in-memory copy before the out-of-core runs
        for path in paths.values():
            subprocess.run(["rm", "-rf", str(path)], check=True)
        big = {}
        for n in (a.big_n // 4, a.big_n) if a.big_n else ():
            path = write_store(Path(tmp) / f"big{n}.zarr", n, a.d, chunk, DEFAULT_ACTS_CODEC, 1)
            out = subprocess.run(
                [sys.executable, __file__, "--child", str(path)],
                capture_output=True,
                text=True,
                check=True,
            )
            big[str(n)] = json.loads(out.stdout.strip().splitlines()[-1]) | {
                "store_bytes": n * a.d * 4
            }
            subprocess.run(["rm", "-rf", str(path)], check=True)
    load.append(os.getloadavg()[0])
    cov_s, cov_cpu = min(t_cov), min(cpu_cov)
    for c in codecs.values():
        c["ratio_stream_over_np_cov"] = cov_s / c["stream_seconds"]
        c["cpu_ratio_stream_over_np_cov"] = cov_cpu / c["stream_cpu_seconds"]
    res = {
        "label": a.label,
        "note": a.note,
        "machine": {
            "cpu_count": os.cpu_count(),
            "load_average_1min_start_end": load,
            "platform": platform.platform(),
            "processor": platform.processor(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "dask": dask.__version__,
            "zarr": zarr.__version__,
        },
        "throughput": {
            "n": a.n,
            "d": a.d,
            "chunk": chunk,
            "store_dtype": "float32",
            "default_codec": DEFAULT_ACTS_CODEC,
            "np_cov_seconds": cov_s,
            "np_cov_cpu_seconds": cov_cpu,
            "np_cov_rows_per_s": a.n / cov_s,
            "codecs": codecs,
            "ratio_stream_over_np_cov": codecs[DEFAULT_ACTS_CODEC]["ratio_stream_over_np_cov"],
            "goal": 0.8,
            "max_abs_cov_error": err,
        },
        "out_of_core": {"d": a.d, "runs": big},
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"fit-{a.label}.json").write_text(json.dumps(res, indent=2))
    (RESULTS / f"fit-{a.label}.md").write_text(_markdown(res))
    print(_markdown(res))


def _record(wall: list[float], cpu: list[float], fn) -> None:
    """Append ``fn``'s wall seconds and this process's CPU seconds (all threads)."""
    t, c = time.perf_counter(), time.process_time()
    fn()
    wall.append(time.perf_counter() - t)
    cpu.append(time.process_time() - c)


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _markdown(r: dict) -> str:
    t, o, m = r["throughput"], r["out_of_core"], r["machine"]
    mb = 2**20
    lines = [
        f"# fit benchmark: {r['label']}\n",
        f"Machine: {m['cpu_count']} CPUs, {m['platform']}, Python {m['python']}, "
        f"numpy {m['numpy']}, dask {m['dask']}, zarr {m['zarr']}; 1-min load average "
        f"{m['load_average_1min_start_end'][0]:.1f} at start, "
        f"{m['load_average_1min_start_end'][1]:.1f} at end. {r['note']}\n",
        f"## fit pass 1 vs np.cov (N={t['n']}, D={t['d']}, float32 store, chunk={t['chunk']} "
        "rows as collect's default)\n",
        f"in-memory np.cov (float64): {t['np_cov_seconds']:.3f} s, "
        f"{t['np_cov_rows_per_s']:.0f} rows/s, {t['np_cov_cpu_seconds']:.3f} CPU s "
        "(best of all repeats). CPU s: this process's CPU time over all threads, the work "
        "done, which a loaded machine's time slicing distorts less than wall time.\n",
        "| acts codec | MiB on disk | of raw | read s | read CPU s | fit pass 1 s | "
        "fit CPU s | ratio vs np.cov (wall) | (CPU) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, c in t["codecs"].items():
        lines.append(
            f"| {name}{' (default)' if name == t['default_codec'] else ''} | "
            f"{c['bytes'] / mb:.0f} | {c['bytes'] / c['raw_bytes']:.2f} | "
            f"{c['read_seconds']:.3f} | {c['read_cpu_seconds']:.3f} | "
            f"{c['stream_seconds']:.3f} | {c['stream_cpu_seconds']:.3f} | "
            f"{c['ratio_stream_over_np_cov']:.2f} | {c['cpu_ratio_stream_over_np_cov']:.2f} |"
        )
    lines += [
        "",
        f"**ratio (fit pass 1 on the default store / np.cov) = "
        f"{t['ratio_stream_over_np_cov']:.2f}** (goal >= {t['goal']}); "
        f"max |cov difference| = {t['max_abs_cov_error']:.2e}\n",
        f"## Out of core (D={o['d']}): peak RSS of a process running fit pass 1\n",
        "| N | store MiB | peak RSS MiB | of which imports | seconds |",
        "|---:|---:|---:|---:|---:|",
    ]
    for n, run in o["runs"].items():
        lines.append(
            f"| {n} | {run['store_bytes'] / mb:.0f} | {run['peak_rss_bytes'] / mb:.0f} | "
            f"{run['import_rss_bytes'] / mb:.0f} | {run['seconds']:.1f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
