"""Benchmark: collect pipeline images/s vs forward-only images/s (goal: ratio >= 0.9).

Both use the same network, layers, batch size and device in the same process:
forward-only runs the already preprocessed images through collect's rows function
(:mod:`actstats.net.rows`: forward, reductions; compiled with ``--compile``) under
``torch.inference_mode``; the pipeline is ``actstats.pipeline.collect.collect`` end to
end (decode, preprocess, forward, reduce, zarr writes) on images written to a temp dir,
at steady state: the marginal rate between collecting half of the files (4 classes,
``per_class``) and all of them, so the start-up both runs pay is not counted.

    python benchmarks/collect.py --model vgg16 --weights none --images 512 --size 224 --jpeg
    python benchmarks/collect.py --model actstats.demo.digits:digits_vgg --images 2048 --size 32

With ``--imagenet-jpegs`` the files are ImageNet-sized JPEGs (~500x375 crops of
scikit-image photos, one in 8 progressive, one in 16 grayscale) and the run also measures
the decode limit: steady-state images/s of collect's own decode path alone (``load_image``
+ resize/crop in as many threads as collect's scheduler; on CUDA also the batched device
decoder), the marginal rate between half and all of the files, so start-up is not counted.
The ratio that says whether collect is at its limit is pipeline / min(forward-only,
decode limit).

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
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import zarr
from PIL import Image
from torchvision.transforms.v2.functional import pil_to_tensor

from actstats.io.data import decode_jpegs, jpeg_bytes, load_image
from actstats.net.network import Network, load_network
from actstats.net.preprocessing import Preprocessing
from actstats.net.reduce import parse_reduction
from actstats.net.rows import rows_function
from actstats.pipeline.collect import collect, plan_layers
from actstats.pipeline.collect_graph import (
    DECODERS,
    geometry,
    local_threads,
    normalize,
    prepare_device,
    resize_by_size,
)

RESULTS = Path(__file__).resolve().parent / "results"


def write_imagenet_jpegs(root: Path, n: int, seed: int = 0) -> list[Path]:
    """N JPEGs shaped like ImageNet's in 4 classes: ~500x375 (one in 4 portrait) crops of
    scikit-image photos at quality 90; one in 8 progressive, one in 16 grayscale."""
    import skimage.data

    photos = [
        getattr(skimage.data, name)() for name in ("astronaut", "coffee", "chelsea", "rocket")
    ]
    rng = np.random.default_rng(seed)
    files = []
    for i in range(n):
        photo = photos[i % len(photos)]
        h, w = photo.shape[:2]
        ch, cw = (min(h, 500), min(w, 375)) if i % 4 == 3 else (min(h, 375), min(w, 500))
        y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        img = Image.fromarray(photo[y : y + ch, x : x + cw])
        if i % 16 == 5:
            img = img.convert("L")
        path = root / f"class{i % 4}" / f"{i:06d}.JPEG"
        path.parent.mkdir(parents=True, exist_ok=True)
        img.save(path, quality=90, progressive=i % 8 == 1)
        files.append(path)
    return files


def _marginal_rate(run: Callable[[list[Path]], None], files: list[Path]) -> float:
    """Images/s between decoding half of ``files`` and all of them (warm: a few first)."""
    run(files[: min(len(files), 8)])
    half = len(files) // 2
    t0 = time.perf_counter()
    run(files[:half])
    t1 = time.perf_counter()
    run(files)
    t2 = time.perf_counter()
    return (len(files) - half) / max((t2 - t1) - (t1 - t0), 1e-9)


def decode_limits(
    net: Network, files: list[Path], batch: int, repeats: int = 1
) -> dict[str, float]:
    """Steady-state images/s of collect's decode paths alone, without the network.

    ``cpu``: ``load_image`` (the robust PIL decoder) + resize/crop to a uint8 tensor, in
    as many threads as collect's scheduler runs (``local_threads``), through one
    persistent pool. ``gpu`` (CUDA only): batched ``decode_jpegs`` on the device + the
    same resize/crop once per size bucket (``resize_by_size``), as collect's device
    decoder does. Best of ``repeats``, as the pipeline's rate is.
    """
    p = net.preprocessing
    resize_crop = geometry(p)

    def one(f: Path) -> torch.Tensor:
        return resize_crop(pil_to_tensor(load_image(f, resize=p.resize)))

    limits = {}
    with ThreadPoolExecutor(local_threads(net.device)) as pool:
        limits["cpu"] = max(
            _marginal_rate(lambda fs: list(pool.map(one, fs)), files) for _ in range(repeats)
        )
    if net.device.type == "cuda":
        datas = [jpeg_bytes(f, p.resize) for f in files]
        by_file = dict(zip(files, datas, strict=True))

        def on_device(fs: list[Path]) -> None:
            ds = [by_file[f] for f in fs if by_file[f] is not None]
            for b in range(0, len(ds), batch):
                resize_by_size(
                    dict(enumerate(decode_jpegs(ds[b : b + batch], net.device))), resize_crop
                )
            torch.cuda.synchronize(net.device)

        limits["gpu"] = max(_marginal_rate(on_device, files) for _ in range(repeats))
    return limits


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


def forward_only(
    net: Network,
    files: list[Path],
    layers: list[str],
    batch: int,
    bf16: bool,
    compile: bool = False,
) -> float:
    """Images/s of the network alone, with the pipeline's device settings and per-batch work.

    Inputs are preprocessed uint8 batches in host memory (pinned on CUDA);
    timed: copy to the device, normalize, forward (channels_last + cuDNN
    autotuning on CUDA, bf16 autocast if ``bf16``), the layers' reductions
    and one copy of the rows back per batch, through the same rows function
    (compiled when ``compile``) -- what ``forward-c`` does minus decoding and
    zarr writes.
    """
    prepare_device(net)
    resize_crop = geometry(net.preprocessing)
    x = torch.stack([resize_crop(pil_to_tensor(load_image(f))) for f in files])
    cuda = net.device.type == "cuda"
    if cuda:
        x = x.pin_memory()
    plan = plan_layers(net, layers, None)
    reductions = {e["name"]: parse_reduction(e["reduce"]) for e in plan}
    rows_of = rows_function(net, reductions, compile=compile, batch_size=batch)
    fmt = torch.channels_last if cuda else torch.contiguous_format
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16 and cuda)

    def run(xb: torch.Tensor) -> torch.Tensor:
        xb = normalize(xb.to(net.device, non_blocking=True), net.preprocessing)
        with autocast:
            flat = rows_of(xb.contiguous(memory_format=fmt))
        if not cuda:
            return flat
        out = torch.empty(flat.shape, dtype=flat.dtype, pin_memory=True)
        return out.copy_(flat, non_blocking=True)

    with torch.inference_mode():
        run(x[:batch])  # warm-up (cuDNN autotuning)
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        for b in range(0, len(x), batch):
            run(x[b : b + batch])
        if cuda:
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
    parser.add_argument(
        "--imagenet-jpegs",
        action="store_true",
        help="ImageNet-sized JPEGs (progressive and grayscale among them) and decode limits",
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="torch.compile in both forward-only and collect [default: on CUDA only]",
    )
    parser.add_argument("--decode", default="auto", choices=DECODERS)
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
    compiled = net.device.type == "cuda" if args.compile is None else args.compile
    with tempfile.TemporaryDirectory() as tmp:
        if args.imagenet_jpegs:
            files = write_imagenet_jpegs(Path(tmp) / "images", args.images)
        else:
            files = write_images(Path(tmp) / "images", args.images, args.size, args.jpeg)
        limits = (
            decode_limits(net, files, args.batch_size, args.repeats) if args.imagenet_jpegs else {}
        )
        fwd = pipe = pipe_wall = 0.0
        fwd_other = 0.0  # the other precision, for reference (CUDA only)
        stages: dict[str, float] = {}
        for _ in range(args.repeats):  # interleaved, best of each: robust to a busy machine
            fwd = max(fwd, forward_only(net, files, layers, args.batch_size, args.bf16, compiled))
            if net.device.type == "cuda":
                fwd_other = max(
                    fwd_other,
                    forward_only(net, files, layers, args.batch_size, not args.bf16, compiled),
                )
            timings = {}
            half = max(1, len(files) // 8)  # per class: half the files (4 classes)
            for per_class in (half, None):
                start = time.perf_counter()
                summary = collect(
                    Path(tmp) / "images",
                    Path(tmp) / "store.zarr",
                    network=net,
                    layers=layers,
                    batch_size=args.batch_size,
                    bf16=args.bf16,
                    decode=args.decode,
                    overwrite=True,
                    compile=compiled,
                    per_class=per_class,
                )
                timings[per_class] = (summary.n_images, time.perf_counter() - start)
            (n_half, t_half), (n_all, seconds) = timings[half], timings[None]
            if n_all / seconds > pipe_wall:
                pipe_wall = n_all / seconds
                stages = {"wall": seconds, **summary.stage_seconds}
            # steady state: the marginal rate, without the start-up both runs pay
            pipe = max(pipe, (n_all - n_half) / max(seconds - t_half, 1e-9))
        decoder = zarr.open_group(str(Path(tmp) / "store.zarr")).attrs["actstats"]["decode"]
    ratio = pipe / fwd
    # the decode limit of the decoder collect used: mixed runs both (their sum bounds it)
    limit = sum(limits.values()) if decoder == "mixed" else limits.get(decoder)
    bound = min(fwd, limit) if limit else None
    # on a CPU device decoding and the forward share the cores: per image the pipeline
    # needs both times, so its bound is their harmonic combination, not the minimum
    shared = 1 / (1 / fwd + 1 / limit) if limit and net.device.type == "cpu" else None
    label = args.label or f"{args.model.split(':')[-1]}-{net.device.type}-{args.size}px"
    result = {
        "label": label,
        "model": args.model,
        "weights": args.weights,
        "images": args.images,
        "size": args.size,
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "format": "imagenet-jpeg" if args.imagenet_jpegs else "jpeg" if args.jpeg else "png",
        "layers": layers,
        "bf16": args.bf16,
        "compile": compiled,
        "decode": decoder,
        "forward_only_images_per_s": fwd,
        "forward_only_other_precision_images_per_s": fwd_other or None,
        "pipeline_images_per_s": pipe,
        "pipeline_wall_images_per_s": pipe_wall,
        "ratio": ratio,
        "decode_limit_images_per_s": limits or None,
        "ratio_vs_min_forward_and_decode_limit": pipe / bound if bound else None,
        "shared_cores_bound_images_per_s": shared,
        "ratio_vs_shared_cores_bound": pipe / shared if shared else None,
        "pipeline_stage_seconds": stages,
        "machine": machine(net),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"collect-{label}.json").write_text(json.dumps(result, indent=2) + "\n")
    m = result["machine"]
    other = "fp32" if args.bf16 else "bf16"
    stage_rows = "".join(
        f"| {k} | {v:,.2f} | {1000 * v / args.images:.3f} |\n" for k, v in stages.items()
    )
    limit_text = (
        "Decode limit (collect's decode path alone, steady state): "
        + ", ".join(f"{k} {v:,.1f} img/s" for k, v in limits.items())
        + f"; pipeline / min(forward-only, decode limit {limit:,.1f}) = "
        f"**{pipe / bound:.2f}**.\n\n"
        + (
            f"On this CPU device decoding and the forward share the cores, so per image the "
            f"pipeline needs both: bound 1 / (1 / forward-only + 1 / decode limit) = "
            f"{shared:,.1f} img/s; pipeline / that = **{pipe / shared:.2f}**.\n\n"
            if shared
            else ""
        )
        if bound and limit
        else ""
    )
    (args.out / f"collect-{label}.md").write_text(
        f"# collect benchmark: {label}\n\n"
        f"{args.model} ({args.weights}), {args.images} {result['format']} images, "
        f"{args.size}px, batch {args.batch_size}, layers {', '.join(layers)}, "
        f"{'bf16' if args.bf16 else 'fp32'}, decode {decoder}, "
        f"{'torch.compile' if compiled else 'eager'}\n\n"
        f"Forward-only: same device settings as the pipeline (channels_last, cuDNN "
        f"autotuning and autocast on CUDA), uint8 inputs in host memory, reductions "
        f"and the copy back included.\n\n"
        f"Pipeline: steady state, the marginal rate between collecting half of the files "
        f"and all of them (each a fresh store), so start-up (store creation, graph, the "
        f"first batch) is not counted; the wall rate of the whole run was "
        f"{pipe_wall:,.1f} img/s.\n\n"
        f"| forward-only img/s | pipeline img/s | ratio |\n|---:|---:|---:|\n"
        f"| {fwd:,.1f} | {pipe:,.1f} | {ratio:.2f} |\n\n"
        + (f"Forward-only in {other}: {fwd_other:,.1f} img/s.\n\n" if fwd_other else "")
        + limit_text
        + "Where the time goes (best pipeline run; task seconds summed over threads, "
        "so stages overlap and exceed the wall time; `decode` runs in the dask threads, "
        "`device_decode`, `forward` and `write` in the forward tasks):\n\n"
        "| stage | seconds | ms per image |\n|---|---:|---:|\n"
        + stage_rows
        + f"\nMachine: {m['device']}, {m['cpu_count']} CPUs ({m['torch_threads']} torch "
        f"threads), {m['platform']}, Python {m['python']}, torch {m['torch']}\n"
    )
    print(f"{label}: forward-only {fwd:,.1f} img/s, pipeline {pipe:,.1f} img/s, ratio {ratio:.2f}")
    if bound:
        print(f"decode limit {limits}: pipeline / min(forward-only, limit) {pipe / bound:.2f}")
    if shared:
        print(f"shared-cores bound {shared:,.1f} img/s: pipeline / bound {pipe / shared:.2f}")
    print("stage seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in stages.items()))


if __name__ == "__main__":
    main()
