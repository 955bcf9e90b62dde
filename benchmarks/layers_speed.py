"""``actstats layers vgg16``: meta-device shapes against building the network for real.

Measured in one run on this machine: the library call behind the command
(:func:`actstats.network.network_layers`: the model built on the meta device, one
forward of meta tensors that records every module's shape and layout) against what
the command did before (random-initialized VGG16 on the CPU, its weights hashed, a
forward at batch 1), and the command's whole wall time in a fresh process (Python,
torch and the CLI's imports included). Results go to
``benchmarks/results/layers_speed-<host>.json``.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
import warnings
from pathlib import Path

import torch

from actstats.net.network import load_network, network_layers

RESULTS = Path(__file__).resolve().parent / "results"


def _before(model: str) -> float:
    """Seconds of the old path: build with random weights on the CPU, forward at batch 1."""
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        net = load_network(model, "none", device="cpu")  # init + sha256 of the weights
    shapes = {}
    hooks = [
        m.register_forward_hook(lambda _m, _i, o, n=n: shapes.__setitem__(n, tuple(o.shape)))
        for n, m in net.module.named_modules()
        if n and not list(m.children())
    ]
    with torch.inference_mode():
        net.module(torch.zeros(1, 3, 224, 224))
    for h in hooks:
        h.remove()
    return time.perf_counter() - t


def _after(model: str) -> tuple[float, int]:
    t = time.perf_counter()
    _, rows = network_layers(model)
    return time.perf_counter() - t, len(rows)


def _command(model: str) -> float:
    t = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "actstats", "layers", model, "--json"],
        check=True,
        capture_output=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    return time.perf_counter() - t


def main() -> None:
    model = sys.argv[1] if len(sys.argv) > 1 else "vgg16"
    torch.set_num_threads(1)
    after, n_rows = _after(model)
    before = _before(model)
    after2, _ = _after(model)  # warm: torchvision's modules already imported
    command = _command(model)
    result = {
        "machine": f"{platform.node()} ({os.cpu_count()} CPUs, shared; torch threads 1)",
        "load_average": os.getloadavg()[0],
        "model": model,
        "layers_listed": n_rows,
        "before_seconds": round(before, 3),
        "after_seconds": round(min(after, after2), 3),
        "speedup": round(before / min(after, after2), 1),
        "command_wall_seconds": round(command, 2),
    }
    print(json.dumps(result, indent=1))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"layers_speed-{platform.node()}.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
