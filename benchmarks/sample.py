"""Samples per second: 64 samples in one batch vs one at a time, same steps, same run.

    python benchmarks/sample.py --label cpu-digits            # trains/collects the digits
    python benchmarks/sample.py --models MODELS --neuron fc8:207 --device cuda --label h100

Without ``--models`` it builds the digits setup in a temporary folder (train the
digits net, collect, fit). Writes ``benchmarks/results/sample-<label>.{json,md}``.
"""

from __future__ import annotations

import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import typer

import actstats
from actstats.net.network import load_network
from actstats.pipeline.sample import sample_units
from actstats.synth.methods import default_config

RESULTS = Path(__file__).parent / "results"


def _digits_models(workdir: Path) -> tuple[Path, str, str]:
    from actstats.demo.digits import (
        digits_vgg,
        load_digit_folder_tensors,
        train_classifier,
        write_digit_folders,
    )
    from actstats.pipeline.collect import collect
    from actstats.pipeline.fit import fit_store

    root = write_digit_folders(workdir / "digits")
    module = digits_vgg()
    train_classifier(module, *load_digit_folder_tensors(root), seed=0)
    weights = workdir / "digits_vgg.pth"
    torch.save(module.state_dict(), weights)
    model = "actstats.demo.digits:digits_vgg"
    collect(
        root,
        workdir / "store.zarr",
        network=model,
        weights=str(weights),
        layers=["conv2_1", "conv3_2", "fc6", "fc7", "fc8"],
        reduce={"conv2_1": "mean", "conv3_2": "grid:2"},
        device="cpu",
    )
    fit_store(workdir / "store.zarr", workdir / "models")
    return workdir / "models", model, str(weights)


def _machine(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"


def main(
    models: Path | None = typer.Option(None, help="Model directory (default: build digits)."),
    model: str | None = typer.Option(None, help="Network (default: the model file's)."),
    weights: str | None = typer.Option(None, help="Weights (default: the model file's)."),
    neuron: str = typer.Option("fc8:3", help="Neuron to sample."),
    method: str = typer.Option("suppress", help="simonyan | suppress | ancestral."),
    n: int = typer.Option(64, "-n", help="Samples."),
    steps: int = typer.Option(50, help="Steps per sample."),
    device: str = typer.Option("auto", help="auto | cpu | cuda."),
    label: str = typer.Option("cpu-digits", help="Name of the results files."),
) -> None:
    """Measure batched vs one-at-a-time sampling throughput and write the results."""
    with tempfile.TemporaryDirectory() as tmp:
        if models is None:
            models, model, weights = _digits_models(Path(tmp))
        ms = actstats.load(models)
        net = load_network(
            model or ms.provenance["model"], weights or ms.provenance["weights"], device=device
        )
        config = default_config(method, steps=steps)
        sample_units(ms, net, [neuron], method, 1, 0, config=default_config(method, steps=2))
        start = time.perf_counter()
        batched = sample_units(ms, net, [neuron], method, n, 0, config=config)[0]
        t_batch = time.perf_counter() - start
        start = time.perf_counter()
        single = [
            sample_units(ms, net, [neuron], method, 1, i, config=config)[0][0] for i in range(n)
        ]
        t_single = time.perf_counter() - start
    row = {
        "label": label,
        "machine": _machine(net.device),
        "device": str(net.device),
        "torch": torch.__version__,
        "model": net.name,
        "neuron": neuron,
        "method": method,
        "n": n,
        "steps": steps,
        "batched_seconds": t_batch,
        "single_seconds": t_single,
        "batched_samples_per_s": n / t_batch,
        "single_samples_per_s": n / t_single,
        "speedup": t_single / t_batch,
        "batched_mean_probability": float(np.mean([r.target_probability or 0 for r in batched])),
        "single_mean_probability": float(np.mean([r.target_probability or 0 for r in single])),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"sample-{label}.json").write_text(json.dumps(row, indent=1))
    md = [
        f"# sample throughput: {label}",
        "",
        f"{row['machine']} ({row['device']}), torch {row['torch']}, {row['model']}, "
        f"{neuron}, method {method}, {steps} steps",
        "",
        "| mode | samples | seconds | samples/s | mean p(class) |",
        "|---|---|---|---|---|",
        f"| batched (one batch of {n}) | {n} | {t_batch:.2f} | {n / t_batch:.2f} | "
        f"{row['batched_mean_probability']:.3f} |",
        f"| one at a time | {n} | {t_single:.2f} | {n / t_single:.2f} | "
        f"{row['single_mean_probability']:.3f} |",
        "",
        f"Batched is {row['speedup']:.1f}x faster.",
        "",
    ]
    (RESULTS / f"sample-{label}.md").write_text("\n".join(md))
    print(
        f"batched {n / t_batch:.2f} samples/s, one at a time {n / t_single:.2f} samples/s, "
        f"ratio {row['speedup']:.1f}x"
    )


if __name__ == "__main__":
    typer.run(main)
