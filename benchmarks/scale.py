"""Benchmark: collect images/s in-process vs 1 and 2 dask worker processes, projected to ImageNet.

Each run is ``actstats.pipeline.collect.collect`` end to end on the same JPEGs (random
crops of scikit-image photos, benchmarks/collect.py's ``write_images``): the
threaded scheduler in this process, then ``scheduler=ADDRESS`` on a
``LocalCluster`` of 1 and of 2 worker processes started beforehand. Cluster
start-up and loading the network on each worker (a one-image-per-class
warm-up run) are reported apart, so the rates are steady-state. The projection divides ImageNet's
1,281,167 training images by the best rate, and sizes each stored layer for
every reduction from ``Network.layer_shapes``.

    python benchmarks/scale.py --model vgg16 --weights none --images 24 --label vgg16-cpu-2core

Writes benchmarks/results/scale-<label>.{json,md}. GPU forward paths (bf16,
channels_last, torch.compile) and JPEG decode: benchmarks/gpu_throughput.py.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from actstats.net.network import load_network
from actstats.net.reduce import parse_reduction
from actstats.pipeline.cluster import connect
from actstats.pipeline.collect import collect

sys.path.insert(0, str(Path(__file__).resolve().parent))
from collect import write_images  # the sibling benchmark's image writer

RESULTS = Path(__file__).resolve().parent / "results"
IMAGENET_TRAIN = 1_281_167
REDUCTIONS = ("full", "mean", "grid:2", "grid:4")


def timed_collect(root: Path, store: Path, args: argparse.Namespace, **where: Any) -> float:
    """Images/s of one complete collect run."""
    start = time.perf_counter()
    summary = collect(
        root,
        store,
        network=args.model,
        weights=args.weights,
        device="cpu",
        batch_size=args.batch_size,
        chunk_size=args.batch_size,
        **where,
    )
    return summary.n_images / (time.perf_counter() - start)


def store_sizes(model: str, weights: str | None) -> list[dict[str, Any]]:
    """Bytes per layer and reduction for ImageNet's training set (float32 and float16)."""
    net = load_network(model, weights, device="cpu")
    rows = []
    for layer, shape in net.layer_shapes(net.default_layers()).items():
        for spec in REDUCTIONS:
            reduction = parse_reduction(spec)
            if reduction.kind != "full" and len(shape) != 3:
                continue
            dim = reduction.dim(shape)
            rows.append(
                {
                    "layer": layer,
                    "shape": list(shape),
                    "reduce": spec,
                    "dim": dim,
                    "float32_bytes": IMAGENET_TRAIN * dim * 4,
                    "float16_bytes": IMAGENET_TRAIN * dim * 2,
                }
            )
    return rows


def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        write_images(root, args.images, 256, jpeg=True)
        rates = {"threads (in-process)": timed_collect(root, Path(tmp) / "t.zarr", args)}
        startup = {}
        for n in (1, 2):
            t0 = time.perf_counter()
            with connect(None, n) as client:
                client.wait_for_workers(n)
                startup[n] = time.perf_counter() - t0
                address = client.scheduler.address
                t0 = time.perf_counter()  # loads the network once per worker (kept after)
                timed_collect(
                    root, Path(tmp) / f"warm{n}.zarr", args, scheduler=address, per_class=1
                )
                startup[n] += time.perf_counter() - t0
                rates[f"{n} worker process(es)"] = timed_collect(
                    root, Path(tmp) / f"w{n}.zarr", args, scheduler=address
                )
    best = max(rates.values())
    return {
        "machine": {
            "label": args.label,
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
        },
        "model": args.model,
        "weights": args.weights,
        "images": args.images,
        "batch_size": args.batch_size,
        "images_per_s": rates,
        "cluster_startup_s": startup,
        "projection": {
            "images": IMAGENET_TRAIN,
            "best_images_per_s": best,
            "hours": IMAGENET_TRAIN / best / 3600,
            "store": store_sizes(args.model, args.weights),
        },
    }


def markdown(res: dict[str, Any]) -> str:
    m, p = res["machine"], res["projection"]
    lines = [
        f"# collect scale-out: {res['model']} on {m['label']}",
        "",
        f"Machine: {m['platform']}, {m['processor']}, {m['cpu_count']} CPUs, "
        f"Python {m['python']}. {res['images']} JPEGs, batch {res['batch_size']}, CPU device.",
        "",
        "| run | images/s |",
        "|---|---:|",
        *(f"| {k} | {v:.2f} |" for k, v in res["images_per_s"].items()),
        "",
        "Cluster start-up + network load per worker (not in the rates): "
        + ", ".join(f"{n} worker(s) {s:.1f} s" for n, s in res["cluster_startup_s"].items()),
        "",
        f"Projection to ImageNet train ({p['images']:,} images) at {p['best_images_per_s']:.2f} "
        f"images/s: {p['hours']:,.0f} hours on this machine.",
        "",
        "| layer | shape | reduce | D | float32 | float16 |",
        "|---|---|---|---:|---:|---:|",
        *(
            f"| {r['layer']} | {'x'.join(map(str, r['shape']))} | {r['reduce']} | {r['dim']:,} "
            f"| {_size(r['float32_bytes'])} | {_size(r['float16_bytes'])} |"
            for r in p["store"]
        ),
    ]
    return "\n".join(lines) + "\n"


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000:
            return f"{n:,.1f} {unit}"
        n /= 1000
    return f"{n:,.1f} TB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vgg16")
    parser.add_argument("--weights", default="none")
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--label", default=f"{platform.node()}-{os.cpu_count()}cpu")
    args = parser.parse_args()
    res = run(args)
    RESULTS.mkdir(exist_ok=True)
    stem = RESULTS / f"scale-{args.label}"
    stem.with_suffix(".json").write_text(json.dumps(res, indent=1))
    stem.with_suffix(".md").write_text(markdown(res))
    print(markdown(res))


if __name__ == "__main__":
    main()
