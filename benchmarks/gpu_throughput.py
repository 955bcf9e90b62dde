"""VGG16 throughput on one GPU: forward only, and end to end from JPEG files.

Issue #7's device benchmark. Measures, in one run on one device:

* forward-only images/s of VGG16 (random weights) in float32, bf16 autocast +
  channels_last, and that plus ``torch.compile``;
* end-to-end images/s from ImageNet-sized JPEG files (``collect.py``'s
  ``write_imagenet_jpegs``: ~500x375, progressive and grayscale among them): CPU decode
  (PIL in persistent DataLoader worker processes), GPU decode
  (``torchvision.io.decode_jpeg`` on CUDA, batched), and both at once (half the files
  each way); each timed on a second pass, after a warm-up pass that starts the
  workers (so worker start-up is not counted as decode time);

and reports each against the forward-only rate and against VGG16's 31 GFLOPs
per 224 px image. Writes ``benchmarks/results/gpu-throughput-<label>.{json,md}``.

    python benchmarks/gpu_throughput.py --images 4096 --batch 256
    python benchmarks/gpu_throughput.py --device cpu --images 32 --batch 8 --size 64  # smoke
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
import torchvision
from collect import write_imagenet_jpegs  # this folder's collect benchmark
from PIL import Image
from torchvision.transforms import v2

GFLOPS_PER_IMAGE_224 = 31.0
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def timed(fn, device: torch.device, repeats: int) -> float:
    """Median seconds of ``fn`` after one warm-up call (synchronized)."""
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def forward_rates(model, device, batch: int, size: int, repeats: int) -> dict[str, float]:
    x = torch.randn(batch, 3, size, size, device=device)
    rates = {}
    with torch.inference_mode():
        rates["fp32"] = batch / timed(lambda: model(x), device, repeats)
        if device.type == "cuda":
            m_cl = model.to(memory_format=torch.channels_last)
            x_cl = x.to(memory_format=torch.channels_last)

            def bf16():
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    return m_cl(x_cl)

            rates["bf16_channels_last"] = batch / timed(bf16, device, repeats)
            compiled = torch.compile(m_cl)

            def bf16_compiled():
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    return compiled(x_cl)

            try:
                rates["bf16_channels_last_compile"] = batch / timed(bf16_compiled, device, repeats)
            except Exception as exc:  # record why compile failed, keep the rest
                print(f"torch.compile failed: {exc!r}")
    return rates


class _JpegFiles(torch.utils.data.Dataset):
    def __init__(self, paths, size):
        self.paths = paths
        self.tf = v2.Compose(
            [v2.PILToTensor(), v2.Resize(256, antialias=True), v2.CenterCrop(size)]
        )

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        return self.tf(Image.open(self.paths[i]).convert("RGB"))


def run_model(model, batch_u8: torch.Tensor, device: torch.device) -> None:
    mean = torch.tensor(MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=device).view(1, 3, 1, 1)
    x = ((batch_u8.to(device, non_blocking=True).float() / 255.0) - mean) / std
    x = x.contiguous(memory_format=torch.channels_last)
    with (
        torch.inference_mode(),
        torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"),
    ):
        model(x)


def cpu_decode_pass(model, paths, device, batch, size, workers) -> float:
    loader = torch.utils.data.DataLoader(
        _JpegFiles(paths, size),
        batch_size=batch,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
        prefetch_factor=4 if workers else None,
    )
    for _ in range(2):  # the first pass starts the workers; the second is timed
        t0 = time.perf_counter()
        for xb in loader:
            run_model(model, xb, device)
        if device.type == "cuda":
            torch.cuda.synchronize()
    return len(paths) / (time.perf_counter() - t0)


def gpu_decode_pass(model, paths, device, batch, size) -> float:
    datas = [torchvision.io.read_file(str(p)) for p in paths]  # bytes in RAM: disk is not timed
    resize = v2.Compose([v2.Resize(256, antialias=True), v2.CenterCrop(size)])
    for _ in range(2):  # the first pass warms the decoder up; the second is timed
        t0 = time.perf_counter()
        for start in range(0, len(datas), batch):
            imgs = torchvision.io.decode_jpeg(
                datas[start : start + batch], device=device, mode=torchvision.io.ImageReadMode.RGB
            )
            xb = torch.stack([resize(im.float()) for im in imgs])
            run_model(model, xb, device)
        if device.type == "cuda":
            torch.cuda.synchronize()
    return len(paths) / (time.perf_counter() - t0)


def both_pass(model, paths, device, batch, size, workers) -> float:
    """Half the files each way at once: the sum of the two concurrent steady rates."""
    half = len(paths) // 2
    rates = {}

    def cpu_half() -> None:
        rates["cpu"] = cpu_decode_pass(model, paths[:half], device, batch, size, workers)

    th = threading.Thread(target=cpu_half)
    th.start()
    rates["gpu"] = gpu_decode_pass(model, paths[half:], device, batch, size)
    th.join()
    return rates["cpu"] + rates["gpu"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=4096)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 2))
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--label", default=None)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args()
    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = True
    model = torchvision.models.vgg16().eval().to(device)
    device_name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or "cpu"
    )
    result = {
        "device": device_name,
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "batch": args.batch,
        "size": args.size,
        "images": args.images,
        "workers": args.workers,
    }
    result["forward"] = forward_rates(model, device, args.batch, args.size, args.repeats)
    gflops = GFLOPS_PER_IMAGE_224 * (args.size / 224) ** 2
    result["forward_tflops"] = {k: v * gflops / 1e3 for k, v in result["forward"].items()}
    model = model.to(memory_format=torch.channels_last)
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_imagenet_jpegs(Path(tmp), args.images)
        e2e = {
            "cpu_decode": cpu_decode_pass(model, paths, device, args.batch, args.size, args.workers)
        }
        if device.type == "cuda":
            e2e["gpu_decode"] = gpu_decode_pass(model, paths, device, args.batch, args.size)
            e2e["cpu_and_gpu_decode"] = both_pass(
                model, paths, device, args.batch, args.size, args.workers
            )
    result["end_to_end"] = e2e
    best_fwd = max(result["forward"].values())
    result["end_to_end_over_forward"] = {k: v / best_fwd for k, v in e2e.items()}
    label = args.label or (device_name.replace(" ", "-") if device.type == "cuda" else "cpu")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"gpu-throughput-{label}.json").write_text(json.dumps(result, indent=2))
    lines = [
        f"# VGG16 throughput on {device_name} ({os.cpu_count()} CPUs, torch {torch.__version__})",
        "",
        f"batch {args.batch}, {args.size}px, {args.images} JPEGs (~500x375)",
        "",
        "| path | images/s | TFLOP/s or ratio to best forward |",
        "|---|---|---|",
    ]
    for k, v in result["forward"].items():
        lines.append(f"| forward {k} | {v:,.0f} | {result['forward_tflops'][k]:.0f} TFLOP/s |")
    for k, v in e2e.items():
        lines.append(f"| end to end, {k} | {v:,.0f} | {result['end_to_end_over_forward'][k]:.2f} |")
    (out / f"gpu-throughput-{label}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
