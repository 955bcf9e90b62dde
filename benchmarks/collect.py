"""Benchmark: collect pipeline images/s vs forward-only images/s (goal: ratio >= 0.9).

Both use the same network, layers, batch size and device in the same process:
forward-only runs the already preprocessed images through
``Network.activations`` under ``torch.inference_mode``; the pipeline is
``actstats.collect.collect`` end to end (decode, preprocess, forward, reduce,
zarr writes) on images written to a temp dir.

    python benchmarks/collect.py --model vgg16 --weights none --images 512 --size 224 --jpeg
    python benchmarks/collect.py --model actstats.digits:digits_vgg --images 2048 --size 32

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
from PIL import Image

from actstats.collect import collect
from actstats.data import load_image
from actstats.network import Network, load_network
from actstats.preprocessing import Preprocessing

RESULTS = Path(__file__).resolve().parent / "results"


def write_images(root: Path, n: int, size: int, jpeg: bool, seed: int = 0) -> list[Path]:
    """N images of natural content (random crops of scikit-image photos) in 4 classes."""
    import skimage.data

    photos = [
        getattr(skimage.data, name)() for name in ("astronaut", "coffee", "chelsea", "rocket")
    ]
    rng = np.random.default_rng(seed)
    side = int(size * 1.15)  # the preprocessing resizes and crops, as for real photos
    files = []
    for i in range(n):
        photo = photos[i % len(photos)]
        h, w = photo.shape[:2]
        c = int(rng.integers(min(h, w) // 2, min(h, w)))
        y, x = int(rng.integers(0, h - c + 1)), int(rng.integers(0, w - c + 1))
        img = Image.fromarray(photo[y : y + c, x : x + c]).resize((side, side))
        path = root / f"class{i % 4}" / f"{i:06d}.{'jpg' if jpeg else 'png'}"
        path.parent.mkdir(parents=True, exist_ok=True)
        img.save(path, quality=90) if jpeg else img.save(path)
        files.append(path)
    return files


def forward_only(net: Network, files: list[Path], layers: list[str], batch: int) -> float:
    """Images/s of the network alone on preprocessed inputs (host -> device copy included)."""
    x = torch.stack([net.preprocessing(load_image(f)) for f in files])
    with torch.inference_mode():
        net.activations(x[:batch].to(net.device), layers)  # warm-up
        if net.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for b in range(0, len(x), batch):
            acts = net.activations(x[b : b + batch].to(net.device), layers)
            for a in acts.values():
                a.float().cpu()
        if net.device.type == "cuda":
            torch.cuda.synchronize()
    return len(x) / (time.perf_counter() - start)


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
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--layers", default=None, help="comma-separated [default: the defaults]")
    parser.add_argument("--jpeg", action="store_true", help="JPEG files (default PNG)")
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--label", default=None)
    args = parser.parse_args()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        net = load_network(args.model, args.weights, device=args.device)
    if net.preprocessing.crop != args.size:
        p = net.preprocessing
        net.preprocessing = Preprocessing(
            resize=round(args.size * p.resize / p.crop), crop=args.size, mean=p.mean, std=p.std
        )
    layers = args.layers.split(",") if args.layers else net.default_layers()
    with tempfile.TemporaryDirectory() as tmp:
        files = write_images(Path(tmp) / "images", args.images, args.size, args.jpeg)
        fwd = pipe = 0.0
        for _ in range(args.repeats):  # interleaved, best of each: robust to a busy machine
            fwd = max(fwd, forward_only(net, files, layers, args.batch_size))
            start = time.perf_counter()
            summary = collect(
                Path(tmp) / "images",
                Path(tmp) / "store.zarr",
                network=net,
                layers=layers,
                batch_size=args.batch_size,
                progress=False,
                bf16=args.bf16,
                overwrite=True,
            )
            pipe = max(pipe, summary.n_images / (time.perf_counter() - start))
    ratio = pipe / fwd
    label = args.label or f"{args.model.split(':')[-1]}-{net.device.type}-{args.size}px"
    result = {
        "label": label,
        "model": args.model,
        "weights": args.weights,
        "images": args.images,
        "size": args.size,
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "format": "jpeg" if args.jpeg else "png",
        "layers": layers,
        "bf16": args.bf16,
        "forward_only_images_per_s": fwd,
        "pipeline_images_per_s": pipe,
        "ratio": ratio,
        "machine": machine(net),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"collect-{label}.json").write_text(json.dumps(result, indent=2) + "\n")
    m = result["machine"]
    (RESULTS / f"collect-{label}.md").write_text(
        f"# collect benchmark: {label}\n\n"
        f"{args.model} ({args.weights}), {args.images} {result['format']} images, "
        f"{args.size}px, batch {args.batch_size}, layers {', '.join(layers)}\n\n"
        f"| forward-only img/s | pipeline img/s | ratio |\n|---:|---:|---:|\n"
        f"| {fwd:,.1f} | {pipe:,.1f} | {ratio:.2f} |\n\n"
        f"Machine: {m['device']}, {m['cpu_count']} CPUs ({m['torch_threads']} torch threads), "
        f"{m['platform']}, Python {m['python']}, torch {m['torch']}\n"
    )
    print(f"{label}: forward-only {fwd:,.1f} img/s, pipeline {pipe:,.1f} img/s, ratio {ratio:.2f}")


if __name__ == "__main__":
    main()
