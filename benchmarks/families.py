"""Every torchvision classification model through layers -> collect -> fit -> sample.

For each name in ``torchvision.models.list_models(module=torchvision.models)``, in a
subprocess of its own (a crash or a timeout fails one model, not the sweep):

1. ``layers``: :func:`actstats.network.network_layers` (meta tensors) lists every
   layer with its layout; the seconds it takes are recorded.
2. ``collect`` 4 images (2 classes) with the default layers, random weights, at a
   small input where the architecture allows one (``--size``, default 64 px; ViTs
   are built for it with ``image_size``; MaxViT needs 224).
3. Every stored row is compared with a numpy reduction of the layer's raw output
   read with its *true* layout, stated here per family (Swin stages NHWC, ViT encoder
   tokens with one class token, all other 4-D outputs NCHW), not detected.
4. ``fit`` within ``--memory`` (default 2GB); the notes say where it changed a form.
5. ``sample --method suppress --steps 2`` for a channel of the deepest spatial or
   token default layer (else output unit 0).

Results (one record per model: pass/fail, the failing stage and its error, seconds
per stage, layouts, stored widths) go to ``benchmarks/results/families-<host>.json``.
Run: ``python benchmarks/families.py [--models resnet18,vit_b_16] [--timeout 900]``.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
#: Environment variables through which the subprocess's factory learns what to build.
ENV_MODEL, ENV_SIZE = "ACTSTATS_SWEEP_MODEL", "ACTSTATS_SWEEP_SIZE"
FIXED_SIZE = {"maxvit_t": 224}  # partition size 7 at every stage: 224 / 32 = 7


def input_size(name: str, wanted: int) -> int:
    """The input side the sweep uses for ``name``: ``wanted`` rounded to its patch size."""
    if name in FIXED_SIZE:
        return FIXED_SIZE[name]
    import torchvision

    smallest = torchvision.models.get_model_weights(name).DEFAULT.meta.get("min_size", (1, 1))
    wanted = max(wanted, *smallest)  # Inception v3: 75 px
    if name.startswith("vit_"):
        patch = int(name.rsplit("_", 1)[1])
        return max(2, round(wanted / patch)) * patch
    return wanted


def sweep_model():
    """The model named by ``$ACTSTATS_SWEEP_MODEL``, seeded, at ``$ACTSTATS_SWEEP_SIZE`` px."""
    import torch
    import torchvision

    name, size = os.environ[ENV_MODEL], int(os.environ[ENV_SIZE])
    kwargs = {"image_size": size} if name.startswith("vit_") else {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        module = torchvision.models.get_model(name, weights=None, **kwargs)
    module.actstats_preprocessing = {
        "resize": round(size * 256 / 224),
        "crop": size,
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
    }
    return module


def true_layout(model: str, layer: str, shape: tuple[int, ...], size: int) -> str:
    """The layout a default layer has, from what each family's code does (not detected).

    Swin's ``features`` and ``norm`` run channels-last (torchvision permutes only
    before ``avgpool``); ViT's encoder holds 1 class token + (size / patch)^2 patches;
    every other 4-D output of torchvision's classifiers is NCHW, 2-D is a vector.
    """
    if model.startswith("swin") and layer in ("features", "norm"):
        return "NHWC"
    if model.startswith("vit_") and layer == "encoder":
        side = size // int(model.rsplit("_", 1)[1])
        return f"NTC:1+{side}x{side}"
    return {3: "NCHW", 1: "NC"}.get(len(shape), "other")


def _images(root: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:80, 0:80] / 80.0
    for c, name in enumerate(("a", "b")):
        (root / name).mkdir(parents=True)
        for i in range(2):
            base = np.stack([yy, xx, (yy + xx) / 2] if c == 0 else [xx, yy, 1 - xx], -1)
            img = np.clip(base + 0.2 * rng.normal(size=base.shape), 0, 1)
            Image.fromarray((img * 255).astype(np.uint8)).save(root / name / f"{i}.png")


def _neuron(entries: list[dict]) -> str:
    for e in reversed(entries):
        if e["layout"] != "NC":
            return f"{e['name']}:0"
    return f"{entries[-1]['name']}:0"


def run_one(name: str, size: int, memory: str, record: dict) -> None:
    """Every stage for one model; fills ``record`` as it goes (so a failure keeps the rest)."""
    import torch
    import zarr

    sys.path.insert(0, str(HERE.parent / "tests"))
    from _layout_reference import reference_row

    from actstats.io.data import load_image
    from actstats.net.network import load_network, network_layers
    from actstats.pipeline.collect import collect
    from actstats.pipeline.fit import fit_store
    from actstats.pipeline.sample import run_sample

    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    sys.path.insert(0, str(HERE))
    os.environ[ENV_MODEL], os.environ[ENV_SIZE] = name, str(size)
    spec = "families:sweep_model"
    secs = record["seconds"]

    record["stage"] = "layers"
    t = time.perf_counter()
    _, rows = network_layers(name)
    secs["layers"] = time.perf_counter() - t
    record["layers"] = len(rows)
    record["layouts"] = dict(collections.Counter(str(r.layout).split(":")[0] for r in rows))

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "train"
        _images(root)
        record["stage"] = "collect"
        t = time.perf_counter()
        net = load_network(spec, device="cpu")
        collect(root, Path(tmp) / "acts.zarr", network=net, scheduler="sync")
        secs["collect"] = time.perf_counter() - t

        record["stage"] = "check"
        group = zarr.open_group(str(Path(tmp) / "acts.zarr"), mode="r")
        entries = group.attrs["actstats"]["layers"]
        record["stored"] = {e["name"]: [e["layout"], e["reduce"], e["dim"]] for e in entries}
        paths = [str(p) for p in group["images/path"][:]]
        x = torch.stack([net.preprocessing(load_image(root / p)) for p in paths])
        with torch.inference_mode():
            raw = net.activations(x, [e["name"] for e in entries], run_to_end=True)
        for e in entries:
            want_layout = true_layout(name, e["name"], tuple(e["shape"]), size)
            if e["layout"] != want_layout:
                raise AssertionError(f"{e['name']}: layout {e['layout']}, truly {want_layout}")
            out = raw[e["name"]].numpy()
            want = np.stack([reference_row(out[i], want_layout, e["reduce"]) for i in range(4)])
            got = group[f"acts/{e['name']}"][:]
            scale = max(float(np.abs(want).max()), 1e-12)
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * scale)

        record["stage"] = "fit"
        t = time.perf_counter()
        fit = fit_store(Path(tmp) / "acts.zarr", Path(tmp) / "m", memory=memory, scheduler="sync")
        secs["fit"] = time.perf_counter() - t
        record["fit_notes"] = fit.notes
        record["cov"] = sorted({r["cov"] for r in fit.rows})

        record["stage"] = "sample"
        neuron = _neuron(entries)
        record["neuron"] = neuron
        t = time.perf_counter()
        run_sample(
            Path(tmp) / "m", [neuron], "suppress", 1, 0, Path(tmp) / "s",
            class_name="a", device="cpu", steps=2, network=spec,
        )  # fmt: skip
        secs["sample"] = time.perf_counter() - t
    record["stage"] = "done"
    record["status"] = "pass"


#: One model per family first, so a sweep cut short still covers every family.
REPRESENTATIVES = (
    "resnet18", "vit_b_16", "swin_t", "swin_v2_t", "maxvit_t", "convnext_tiny", "alexnet",
    "vgg11", "densenet121", "efficientnet_b0", "efficientnet_v2_s", "googlenet",
    "inception_v3", "mnasnet0_5", "mobilenet_v2", "mobilenet_v3_small", "regnet_x_400mf",
    "resnext50_32x4d", "shufflenet_v2_x0_5", "squeezenet1_0", "wide_resnet50_2",
)  # fmt: skip


def _order(names: list[str]) -> list[str]:
    """Representatives first, then the others from the fewest parameters up."""
    import torchvision

    def params(name: str) -> int:  # torchvision's weights metadata, nothing downloaded
        return int(torchvision.models.get_model_weights(name).DEFAULT.meta["num_params"])

    first = [n for n in REPRESENTATIVES if n in names]
    return first + sorted((n for n in names if n not in first), key=params)


def _child(args: argparse.Namespace) -> None:
    """Run the models in ``args.one`` in turn (one import of torch for all), a line each."""
    for name in args.one.split(","):
        size = input_size(name, args.size)
        Path(args.json_out + ".current").write_text(name)
        record: dict = {"model": name, "status": "fail", "seconds": {}, "size": size}
        t = time.perf_counter()
        try:
            run_one(name, size, args.memory, record)
        except Exception as exc:  # the record says which stage failed and why
            first = str(exc).splitlines()[0][:300] if str(exc) else ""
            record["error"] = f"{type(exc).__name__}: {first}"
            record["traceback"] = traceback.format_exc()[-1500:]
        record["wall_seconds"] = time.perf_counter() - t
        with open(args.json_out, "a") as fh:
            fh.write(json.dumps(record) + "\n")


def _sweep(names: list[str], args: argparse.Namespace, on_record) -> None:
    """Children run the remaining models; one that runs past ``--timeout`` is killed,
    recorded as a timeout, and a new child takes the rest."""
    with tempfile.TemporaryDirectory() as tmp:
        lines = Path(tmp) / "records.jsonl"
        lines.touch()
        todo = list(names)
        seen = 0
        while todo:
            cmd = [sys.executable, __file__, "--one", ",".join(todo), "--size", str(args.size)]
            cmd += ["--memory", args.memory, "--json-out", str(lines)]
            child = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            current, since = None, time.monotonic()
            while True:
                records = [json.loads(x) for x in lines.read_text().splitlines()]
                for rec in records[seen:]:
                    on_record(rec)
                    todo.remove(rec["model"])
                seen = len(records)
                marker = Path(str(lines) + ".current")
                now = marker.read_text() if marker.exists() else None
                if now != current:
                    current, since = now, time.monotonic()
                if child.poll() is not None:
                    break
                if current in todo and time.monotonic() - since > args.timeout:
                    child.kill()
                    child.wait()
                    break
                time.sleep(2)
            records = [json.loads(x) for x in lines.read_text().splitlines()]
            for rec in records[seen:]:
                on_record(rec)
                todo.remove(rec["model"])
            seen = len(records)
            if todo and current in todo:  # killed, or the child died inside this model
                why = f"timeout after {args.timeout} s" if child.returncode == -9 else "crashed"
                rec = {"model": current, "status": "fail", "error": why, "seconds": {}}
                with open(lines, "a") as fh:
                    fh.write(json.dumps(rec) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", help="comma-separated names (default: every model)")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--memory", default="2GB")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per model")
    parser.add_argument("--out", default=str(RESULTS / f"families-{platform.node()}.json"))
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--json-out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        return _child(args)
    import torchvision

    everything = torchvision.models.list_models(module=torchvision.models)
    names = args.models.split(",") if args.models else everything
    out = Path(args.out)
    done = {r["model"]: r for r in json.loads(out.read_text())["models"]} if out.exists() else {}
    todo = _order([n for n in names if done.get(n, {}).get("status") != "pass"])

    def on_record(rec: dict) -> None:
        done[rec["model"]] = rec
        err = rec.get("error", "")
        print(f"{rec['model']:28s} {rec['status']:4s} {rec.get('stage', '')} {err}", flush=True)
        _write(out, done, args, everything)

    _sweep(todo, args, on_record)


def _write(out: Path, records: dict, args: argparse.Namespace, everything: list[str]) -> None:
    passed = sorted(n for n, r in records.items() if r["status"] == "pass")
    summary = {
        "models_listed": len(everything),
        "not_run": sorted(set(everything) - set(records)),
        "machine": f"{platform.node()} ({os.cpu_count()} CPUs shared; torch threads 1)",
        "size": args.size,
        "memory": args.memory,
        "passed": passed,
        "failed": {n: r.get("error", "") for n, r in sorted(records.items()) if n not in passed},
        "models": [records[n] for n in sorted(records)],
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(summary, indent=1))
    tmp.replace(out)


if __name__ == "__main__":
    main()
