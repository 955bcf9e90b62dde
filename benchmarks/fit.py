"""Benchmark of ``actstats fit``'s streaming moments.

1. Throughput: streaming float64 moments over a zarr store (dask, chunk tasks merged by
   a tree reduce) vs in-memory ``np.cov`` on the same data, same run. Goal ratio >= 0.8.
2. Out of core: peak RSS of a child process streaming a store larger than a chosen
   memory limit (the store is never loaded whole).

Usage: ``python benchmarks/fit.py [--label NAME] [--n 200000] [--d 256] [--big-n 600000]``
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

from actstats.io.store import STORE_VERSION, create_store, finish_store, open_store, write_chunk
from actstats.pipeline.fit_tasks import chunk_moments, merge_layer_moments, merge_tree

RESULTS = Path(__file__).resolve().parent / "results"


def write_store(path: Path, n: int, d: int, chunk: int, seed: int = 0) -> Path:
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
    store = create_store(path, attrs, [f"{i}.png" for i in range(n)], np.zeros(n, np.int32))
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(d, d)).astype(np.float32) / np.sqrt(d)
    for index, s in enumerate(range(0, n, chunk)):
        e = min(s + chunk, n)
        x = rng.standard_normal((e - s, d), dtype=np.float32) @ mix + 1.0
        write_chunk(store, index, {"x": x}, np.ones(e - s, bool), [""] * (e - s))
    finish_store(store, [])
    return path


def stream_moments(path: Path, n: int, chunk: int, scheduler: str = "threads"):
    """Moments of all rows of ``acts/x``, the way ``fit_store`` pass 1 computes them."""
    spans = [(s, min(s + chunk, n)) for s in range(0, n, chunk)]
    parts = [
        dask.delayed(chunk_moments)(str(path), ["x"], sp, {"c": np.arange(sp[1] - sp[0])}, False)
        for sp in spans
    ]
    picked = [dask.delayed(lambda p: p["c"])(p) for p in parts]
    (out,) = dask.compute(merge_tree(picked, merge_layer_moments), scheduler=scheduler)
    return out["x"]


def _vm(field: str) -> int:
    """Bytes of a /proc/self/status field (VmHWM resets at exec, unlike ru_maxrss)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _child(path: str, n: int, chunk: int) -> None:
    base = _vm("VmRSS")  # after imports
    t = time.perf_counter()
    m = stream_moments(Path(path), n, chunk)
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
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--d", type=int, default=256)
    ap.add_argument("--chunk", type=int, default=8192)
    ap.add_argument("--big-n", type=int, default=1_000_000)
    ap.add_argument("--memory-limit-mb", type=int, default=512)
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        _child(a.child[0], int(a.child[1]), int(a.child[2]))
        return
    with tempfile.TemporaryDirectory() as tmp:
        small = write_store(Path(tmp) / "small.zarr", a.n, a.d, a.chunk)
        X = np.asarray(open_store(small).acts("x")[:]).astype(np.float64)
        t_stream = min(_timed(lambda: stream_moments(small, a.n, a.chunk)) for _ in range(3))
        t_cov = min(_timed(lambda: np.cov(X, rowvar=False)) for _ in range(3))
        m = stream_moments(small, a.n, a.chunk)
        err = float(np.max(np.abs(m.covariance(ddof=1) - np.cov(X, rowvar=False))))
        X = None  # free the in-memory copy before the out-of-core run
        big = write_store(Path(tmp) / "big.zarr", a.big_n, a.d, a.chunk, seed=1)
        store_bytes = a.big_n * a.d * 4
        out = subprocess.run(
            [sys.executable, __file__, "--child", str(big), str(a.big_n), str(a.chunk)],
            capture_output=True,
            text=True,
            check=True,
        )
        child = json.loads(out.stdout.strip().splitlines()[-1])
    res = {
        "label": a.label,
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "processor": platform.processor(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "dask": dask.__version__,
        },
        "throughput": {
            "n": a.n,
            "d": a.d,
            "chunk": a.chunk,
            "store_dtype": "float32",
            "stream_seconds": t_stream,
            "np_cov_seconds": t_cov,
            "stream_rows_per_s": a.n / t_stream,
            "np_cov_rows_per_s": a.n / t_cov,
            "ratio_stream_over_np_cov": t_cov / t_stream,
            "goal": 0.8,
            "max_abs_cov_error": err,
        },
        "out_of_core": {
            "n": a.big_n,
            "d": a.d,
            "store_bytes": store_bytes,
            "memory_limit_bytes": a.memory_limit_mb * 2**20,
            "in_memory_float64_bytes": store_bytes * 2,
            "peak_rss_bytes": child["peak_rss_bytes"],
            "import_rss_bytes": child["import_rss_bytes"],
            "seconds": child["seconds"],
            "under_limit": child["peak_rss_bytes"] < a.memory_limit_mb * 2**20,
        },
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"fit-{a.label}.json").write_text(json.dumps(res, indent=2))
    (RESULTS / f"fit-{a.label}.md").write_text(_markdown(res))
    print(_markdown(res))


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _markdown(r: dict) -> str:
    t, o, m = r["throughput"], r["out_of_core"], r["machine"]
    mb = 2**20
    return (
        f"# fit benchmark: {r['label']}\n\n"
        f"Machine: {m['cpu_count']} CPUs, {m['platform']}, Python {m['python']}, "
        f"numpy {m['numpy']}, dask {m['dask']}\n\n"
        f"## Streaming moments vs np.cov (N={t['n']}, D={t['d']}, chunk={t['chunk']})\n\n"
        "| method | seconds | rows/s |\n|---|---:|---:|\n"
        f"| streaming (zarr + dask, float64 merge) | {t['stream_seconds']:.3f} | "
        f"{t['stream_rows_per_s']:.0f} |\n"
        f"| in-memory np.cov (float64) | {t['np_cov_seconds']:.3f} | "
        f"{t['np_cov_rows_per_s']:.0f} |\n\n"
        f"**ratio (streaming throughput / np.cov) = {t['ratio_stream_over_np_cov']:.2f}** "
        f"(goal >= {t['goal']}); max |cov difference| = {t['max_abs_cov_error']:.2e}\n\n"
        f"## Out of core (N={o['n']}, D={o['d']})\n\n"
        f"store {o['store_bytes'] / mb:.0f} MiB (float64 in memory: "
        f"{o['in_memory_float64_bytes'] / mb:.0f} MiB), limit {o['memory_limit_bytes'] / mb:.0f} "
        f"MiB, **peak RSS {o['peak_rss_bytes'] / mb:.0f} MiB** (of which "
        f"{o['import_rss_bytes'] / mb:.0f} MiB is the interpreter and imports) "
        f"({'under' if o['under_limit'] else 'OVER'} the limit), {o['seconds']:.1f} s\n"
    )


if __name__ == "__main__":
    main()
