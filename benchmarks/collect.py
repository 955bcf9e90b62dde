"""Benchmark: collect images/s in steady state vs its limits (goal: ratio >= 0.9).

All in one process, same network, layers, batch size and device:

- forward-only: preprocessed uint8 batches in host memory through the pipeline's rows
  function (normalize, forward, reductions, copy back), warm-up excluded;
- decode-only: the pipeline's DataLoader (same workers) decoding every file, the first
  batch (worker start-up) excluded;
- pipeline: ``actstats.pipeline.collect.collect`` end to end, the marginal rate between
  runs over half and all of the images (start-up and warm-up cancel out).

ratio = pipeline / min(forward-only, decode-only). Images are ImageNet-sized
(``--source`` 500x375, some 375x500) JPEGs cut from scikit-image photos, every 5th
progressive and every 7th grayscale, as ImageNet has both.

    python benchmarks/collect.py --model vgg16 --images 64 --size 112
    python benchmarks/collect.py --model actstats.demo.digits:digits_vgg --images 512 --size 32

Writes benchmarks/results/collect-<label>.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import zarr
from PIL import Image
from torch.utils.data import DataLoader
from torchvision.transforms.v2.functional import pil_to_tensor

from actstats.io.data import load_image
from actstats.net.network import Network, load_network
from actstats.net.preprocessing import Preprocessing
from actstats.pipeline.collect import collect, plan_layers
from actstats.pipeline.collect_graph import DECODERS, geometry, prepare_device, rows_function
from actstats.pipeline.collect_loop import ChunkBatches, loader_workers

RESULTS = Path(__file__).resolve().parent / "results"


def write_images(root: Path, n: int, source: tuple[int, int], seed: int = 0) -> list[Path]:
    """N ImageNet-like JPEGs (random crops of scikit-image photos) in 4 classes: ``source``
    (w, h) landscape, every 3rd portrait, every 5th progressive, every 7th grayscale."""
    import skimage.data

    photos = [
        getattr(skimage.data, name)() for name in ("astronaut", "coffee", "chelsea", "rocket")
    ]
    rng = np.random.default_rng(seed)
    files = []
    for i in range(n):
        photo = photos[i % len(photos)]
        h, w = photo.shape[:2]
        c = int(rng.integers(min(h, w) // 2, min(h, w)))
        y, x = int(rng.integers(0, h - c + 1)), int(rng.integers(0, w - c + 1))
        size = source if i % 3 else source[::-1]
        img = Image.fromarray(photo[y : y + c, x : x + c]).resize(size)
        if i % 7 == 0:
            img = img.convert("L")
        path = root / f"class{i % 4}" / f"{i:06d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        img.save(path, quality=90, progressive=i % 5 == 0)
        files.append(path)
    return files


def forward_only(net: Network, files: list[Path], attrs: dict, batch: int) -> float:
    """Images/s of the pipeline's rows function alone on preprocessed uint8 batches in host
    memory (pinned on CUDA): copy to the device, normalize, forward, reductions, one copy of
    the rows back per batch -- what the loop does minus decoding and zarr writes."""
    prepare_device(net)
    resize_crop = geometry(net.preprocessing)
    x = torch.stack([resize_crop(pil_to_tensor(load_image(f))) for f in files])
    cuda = net.device.type == "cuda"
    if cuda:
        x = x.pin_memory()
    rows = rows_function(net, attrs, net.preprocessing)

    def run(xb: torch.Tensor) -> torch.Tensor:
        flat = rows(xb.to(net.device, non_blocking=True))
        if not cuda:
            return flat
        out = torch.empty(flat.shape, dtype=flat.dtype, pin_memory=True)
        return out.copy_(flat, non_blocking=True)

    with torch.inference_mode():
        run(x[:batch])  # warm-up (cuDNN autotuning, compilation)
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        for b in range(0, len(x), batch):
            run(x[b : b + batch])
        if cuda:
            torch.cuda.synchronize()
    return len(x) / (time.perf_counter() - start)


def decode_only(net: Network, files: list[Path], batch: int) -> float:
    """Images/s of the pipeline's DataLoader alone (its workers), first batch excluded."""
    items = [(0, b, [str(f) for f in files[b : b + batch]]) for b in range(0, len(files), batch)]
    workers = loader_workers(net.device)
    loader = DataLoader(
        ChunkBatches(items, net.preprocessing),
        batch_size=None,
        num_workers=workers,
        prefetch_factor=2 if workers else None,
    )
    it = iter(loader)
    next(it)  # worker start-up: not timed
    start = time.perf_counter()
    rest = sum(len(b.ok) for b in it)
    return rest / (time.perf_counter() - start) if rest else float("nan")


def machine(net: Network) -> dict[str, object]:
    dev = net.device
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vgg16")
    parser.add_argument("--weights", default="none")
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--size", type=int, default=224, help="network input side (crop)")
    parser.add_argument("--source", default="500x375", help="JPEG width x height")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--layers", default=None, help="comma-separated [default: the defaults]")
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--decode", default="auto", choices=DECODERS)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--label", default=None)
    parser.add_argument("--note", default="", help="what else ran on the machine")
    parser.add_argument("--out", default=str(RESULTS), help="results folder")
    args = parser.parse_args()
    results = Path(args.out)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        net = load_network(args.model, args.weights, device=args.device)
    if net.preprocessing.crop != args.size:
        p = net.preprocessing
        net.preprocessing = Preprocessing(
            resize=round(args.size * p.resize / p.crop), crop=args.size, mean=p.mean, std=p.std
        )
    layers = args.layers.split(",") if args.layers else net.default_layers()
    cuda = net.device.type == "cuda"
    attrs = {
        "layers": plan_layers(net, layers, None),
        "dtype": "float32",
        "autocast": "bfloat16" if args.bf16 and cuda else None,
    }
    source = tuple(int(v) for v in args.source.split("x"))
    per_class = args.images // 4
    with tempfile.TemporaryDirectory() as tmp:
        files = write_images(Path(tmp) / "images", 4 * per_class, source)
        fwd = dec = pipe = 0.0
        stages: dict[str, float] = {}

        def timed_collect(per: int) -> tuple[float, int, dict[str, float]]:
            start = time.perf_counter()
            summary = collect(
                Path(tmp) / "images",
                Path(tmp) / "store.zarr",
                network=net,
                layers=layers,
                batch_size=args.batch_size,
                bf16=args.bf16,
                decode=args.decode,
                per_class=per,
                overwrite=True,
            )
            return time.perf_counter() - start, summary.n_images, summary.stage_seconds

        for _ in range(args.repeats):  # interleaved, best of each: robust to a busy machine
            fwd = max(fwd, forward_only(net, files, attrs, args.batch_size))
            dec = max(dec, decode_only(net, files, args.batch_size))
            t_half, n_half, _ = timed_collect(per_class // 2)
            t_all, n_all, st = timed_collect(per_class)
            rate = (n_all - n_half) / max(t_all - t_half, 1e-9)
            if rate > pipe:
                pipe, stages = rate, {"wall_all": t_all, "wall_half": t_half, **st}
        decoder = zarr.open_group(str(Path(tmp) / "store.zarr")).attrs["actstats"]["decode"]
    limit = min(fwd, dec)
    ratio = pipe / limit
    label = args.label or f"{args.model.split(':')[-1]}-{net.device.type}-{args.size}px"
    result = {
        "label": label,
        "note": args.note,
        "model": args.model,
        "weights": args.weights,
        "images": 4 * per_class,
        "source": args.source,
        "size": args.size,
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "layers": layers,
        "bf16": args.bf16,
        "decode": decoder,
        "forward_only_images_per_s": fwd,
        "decode_only_images_per_s": dec,
        "decode_workers": loader_workers(net.device),
        "pipeline_images_per_s": pipe,
        "limit_images_per_s": limit,
        "ratio": ratio,
        "pipeline_stage_seconds": stages,
        "machine": machine(net) | {"load_average_1min": os.getloadavg()[0]},
    }
    results.mkdir(parents=True, exist_ok=True)
    (results / f"collect-{label}.json").write_text(json.dumps(result, indent=2) + "\n")
    m = result["machine"]
    (results / f"collect-{label}.md").write_text(
        f"# collect benchmark: {label}\n\n"
        f"{args.model} ({args.weights}), {4 * per_class} JPEGs of {args.source} (progressive "
        f"and grayscale among them), {args.size}px crop, batch {args.batch_size}, layers "
        f"{', '.join(layers)}, {'bf16' if args.bf16 else 'fp32'}, decode {decoder}, "
        f"{result['decode_workers']} decode worker process(es)\n\n"
        "Steady state: the pipeline rate is the marginal rate between collecting half and "
        "all of the images; forward-only excludes its warm-up batch, decode-only its first "
        "batch. Best of each over the repeats (interleaved).\n\n"
        "| forward-only img/s | decode-only img/s | pipeline img/s | ratio to min |\n"
        "|---:|---:|---:|---:|\n"
        f"| {fwd:,.1f} | {dec:,.1f} | {pipe:,.1f} | **{ratio:.2f}** |\n\n"
        f"Machine: {m['device']}, {m['cpu_count']} CPUs ({m['torch_threads']} torch "
        f"threads), 1-min load average {m['load_average_1min']:.1f} at the end, "
        f"{m['platform']}, Python {m['python']}, torch {m['torch']}. {args.note}\n"
    )
    print(
        f"{label}: forward-only {fwd:,.1f} img/s, decode-only {dec:,.1f} img/s, "
        f"pipeline {pipe:,.1f} img/s, ratio {ratio:.2f}"
    )


if __name__ == "__main__":
    main()
