"""Realism benchmark: do statistics of real activations give more realistic images?

On the digits network, for every class, ``--n`` samples per method go through the
demo's real path (collect -> fit -> sample) and are measured by
:mod:`actstats.eval.realism` (see its docstring for every definition), once per seed
(``--seeds``, default 0 1 2); the tables give the mean and the standard deviation over
seeds. The protocol cannot flatter itself:

* three splits of the digits (:data:`actstats.demo.digits.SPLITS`), never mixed: the
  networks, the judge and the statistics learn from ``fit``; defaults are chosen on
  ``validation`` (``--split validation``); reported numbers are measured on ``test``
  (the default). The ``real`` row is ``n`` random test images per class, and the Fréchet
  references and pixel Gaussian come from the class's *other* test images;
* ``simonyan+reg`` (the ``suppress`` recipe's regularizers: noise init, jitter, TV, L2,
  blur, with the statistics off) is the headline baseline beside plain ``simonyan``;
* ``suppress`` is split into its parts: ``suppress:prior-only`` (the NLL prior, no
  outlier suppression), ``suppress:outliers-only`` (the seed's outlier suppression, no
  prior) and both (``suppress``); ``outlier units`` is the fraction of the prior
  layers' units of the final images with ``|z| > 3`` under the class model, the units
  outlier suppression would still select;
* ``generator`` is DGN-AM (:mod:`actstats.synth.methods.generator`): a decoder trained
  once per seed run on the fit split's store (fc6 -> pixels, ``--generator-epochs``),
  shared by ``generator`` and ``generator+nll`` (the class model's NLL of the code
  added); its settings were chosen with ``--split validation``. ``train min/1k img`` is
  its training time per 1000 images seen (epochs x store images), on this machine,
  under the load recorded in the JSON (seeds run in parallel with ``--jobs``);
* ``memorization`` (every row) is :func:`actstats.eval.metrics.memorization`: per
  image, the distance to the nearest fit-split image over the distance to the nearest
  held-out image of the split, in the judge's pooled features (~1: no nearer what the
  statistics, networks and generator learned from than unseen digits; 0: copies);
* ``s/sample`` is the sampling's wall time per image (training excluded), on this
  machine with ``--jobs`` seeds in parallel.

Goals (on the seed means): target probability >= 0.9 for every method; pixel NLL ratio
<= 3 for ``suppress`` and ``ancestral``; Fréchet distance to the test images >= 5x lower
than ``simonyan``'s at every measured layer of both networks.

Usage: ``python benchmarks/realism.py [--label NAME] [--n 8] [--seeds 0 1 2]
[--split test|validation] [--variant NAME:RECIPE:field=value,...] [--cache DIR]
[--generator-epochs N]``.
Writes ``benchmarks/results/realism-<label>.json``, ``.md`` and ``-grid.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from itertools import repeat
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from rich.console import Console

import actstats
from actstats.cli.demo import RichReporter
from actstats.demo.digits import DIGIT_NAMES
from actstats.demo.run import DemoConfig, run_demo
from actstats.eval.realism import to_inputs
from actstats.net.network import load_network
from actstats.synth.methods.registry import METHODS
from actstats.synth.objectives import reduce_torch

RESULTS = Path(__file__).resolve().parent / "results"
STATS_METHODS = ("suppress", "ancestral")
GRID_CLASSES = ("zero", "two", "four", "seven", "eight")
#: The suppress recipe without its statistics: what the regularizers alone give.
ABLATION = "simonyan+reg"
#: DGN-AM with the class model's NLL of the code.
GENERATOR_NLL = "generator+nll"
#: The decoder's epochs and the NLL weight, chosen on the validation split
#: (``results/realism-validation-generator-e{3,5,10,30,60}.md``, seeds 0-2): among
#: settings whose judge agreement is >= 0.9, the lowest judge FD at ``body.10``, for
#: the one decoder both rows share the mean of the two rows' (5 epochs: 10.8 and 6.5
#: at weight 1; 10 epochs: 14.8 and 6.1 at weight 3; 3, 30 and 60 epochs worse).
GENERATOR_EPOCHS = 5
GENERATOR_NLL_WEIGHT = 1.0
#: Summary key of the generator's training cost (rows that decode with it).
TRAIN_COST = "generator_train_minutes_per_1k_images"
#: Sample sets beside the library's methods: label -> (recipe, SynthConfig overrides).
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    ABLATION: ("suppress", {"prior_weight": 0.0, "suppress_weight": 0.0}),
    "suppress:prior-only": ("suppress", {"suppress_weight": 0.0}),
    "suppress:outliers-only": ("suppress", {"prior_weight": 0.0}),
    GENERATOR_NLL: ("generator", {"prior_weight": GENERATOR_NLL_WEIGHT}),
}
GRID_METHODS = ("simonyan", ABLATION, *STATS_METHODS, "generator", GENERATOR_NLL)
#: Columns of the headline table: (title, summary key, layer or None).
COLUMNS = (
    ("p(target)", "target_probability", None),
    ("judge agrees", "judge_agreement", None),
    ("pixel NLL ratio", "pixel_nll_ratio", None),
    ("FD fc6", "frechet_net", "fc6"),
    ("FD judge body.10", "frechet_judge", "body.10"),
    ("diversity judge", "diversity_judge", None),
    ("outlier units", "outlier_fraction", None),
    ("memorization", "memorization_ratio", None),
    ("s/sample", "seconds_per_sample", None),
    ("train min/1k img", TRAIN_COST, None),
)


def field_value(text: str) -> Any:
    """A variant's field value: int, float, true/false, else the string (``param=fft``)."""
    if text in ("true", "false"):
        return text == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_variant(text: str) -> tuple[str, tuple[str, dict[str, Any]]]:
    """``NAME:RECIPE:field=value,...`` -> (name, (recipe, overrides)); NAME may hold colons."""
    name, recipe, fields = text.rsplit(":", 2)
    overrides = {}
    for item in filter(None, fields.split(",")):
        key, value = item.split("=")
        overrides[key] = field_value(value)
    return name, (recipe, overrides)


def outlier_fraction(run: Path, method: str, threshold: float = 3.0) -> float:
    """Fraction of the prior layers' units of ``method``'s images with ``|z| > threshold``.

    z-scores under each image's class model (the units outlier suppression selects),
    over every stored layer below ``fc8``, averaged over images.
    """
    models = actstats.load(run / "models")
    prov = models.provenance
    net = load_network(prov["model"], prov["weights"], device="cpu")
    reductions = {e["name"]: e["reduce"] for e in prov["layers"]}
    layers = [ly for ly in models.layers if ly != "fc8"]
    fractions = []
    for folder in sorted((run / "samples" / method).iterdir()):
        meta = json.loads((folder / "samples.json").read_text())
        images = np.stack(
            [np.asarray(Image.open(folder / r["file"]).convert("RGB")) for r in meta["samples"]]
        )
        with torch.inference_mode():
            acts = net.activations(to_inputs(net, images), layers)
        cm = models[meta["class"]]
        for ly in layers:
            z = cm[ly].unit_zscores(reduce_torch(acts[ly], reductions[ly]).double().numpy())
            fractions.append(float(np.mean(np.abs(z) > threshold)))
    return float(np.mean(fractions))


def seconds_per_sample(run: Path, method: str) -> float:
    """Wall seconds per image of ``method``'s sampling: each batch's time over its size.

    One batch holds every class's samples (``samples.json`` records its time and size);
    the time excludes the generator's training (see :func:`generator_cost`).
    """
    rates = []
    for folder in sorted((run / "samples" / method).iterdir()):
        meta = json.loads((folder / "samples.json").read_text())
        rates += [r["seconds"] / r["batch_size"] for r in meta["samples"]]
    return float(np.mean(rates))


def generator_cost(run: Path) -> dict[str, Any]:
    """The run's generator training: minutes per 1000 images seen, epochs, losses, load.

    Read from the generator's manifest (``seconds`` is the training loop's own clock,
    not the store reading before it).
    """
    manifest = json.loads((run / "generator" / "manifest.json").read_text())
    epochs = len(manifest["history"])
    seen = epochs * manifest["n_images"]
    return {
        "minutes_per_1k_images": manifest["seconds"] / 60.0 / (seen / 1000.0),
        "seconds": manifest["seconds"],
        "epochs": epochs,
        "n_images": manifest["n_images"],
        "training": manifest["training"],
        "loss_first_last": [manifest["history"][0], manifest["history"][-1]],
        "load_average_after_run": os.getloadavg(),
    }


def goals(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Each goal with its measured value (on the seed means) and whether it is met."""
    rows = []
    for method in ("simonyan", *STATS_METHODS):
        p = summary[method]["target_probability"]
        rows.append({"goal": f"{method}: target probability >= 0.9", "value": p, "met": p >= 0.9})
    for method in STATS_METHODS:
        r = summary[method]["pixel_nll_ratio"]
        rows.append({"goal": f"{method}: pixel NLL ratio <= 3", "value": r, "met": r <= 3.0})
        for key in ("frechet_net", "frechet_judge"):
            worst = _worst_ratio(summary["simonyan"][key], summary[method][key])
            rows.append(
                {
                    "goal": f"{method}: {key} >= 5x lower than simonyan at every layer "
                    "(worst layer's ratio)",
                    "value": worst,
                    "met": worst >= 5.0,
                }
            )
    return rows + ablation(summary)


def _worst_ratio(base: dict[str, float], mine: dict[str, float]) -> float:
    return min(base[ly] / mine[ly] for ly in base)


def ablation(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Each statistics method and suppress part against ``simonyan+reg`` (reported, no goal)."""
    if ABLATION not in summary:
        return []
    ref = summary[ABLATION]
    rows = []
    for method in [m for m in summary if m not in ("simonyan", ABLATION, "real")]:
        s = summary[method]
        rows.append(
            {
                "goal": f"{method} vs {ABLATION} (reported): worst-layer FD ratio "
                f"{ABLATION}/{method}, judge network "
                f"{_worst_ratio(ref['frechet_judge'], s['frechet_judge']):.3g}; net",
                "value": _worst_ratio(ref["frechet_net"], s["frechet_net"]),
                "met": None,
            }
        )
    return rows


def aggregate(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """Per method, the mean and standard deviation (ddof 1) over seeds of every metric."""
    out: dict[str, Any] = {}
    for method in summaries[0]:
        runs = [s[method] for s in summaries]
        mean: dict[str, Any] = {}
        sd: dict[str, Any] = {}
        for key, value in runs[0].items():
            if isinstance(value, dict):
                mean[key] = {ly: float(np.mean([r[key][ly] for r in runs])) for ly in value}
                sd[key] = {ly: _sd([r[key][ly] for r in runs]) for ly in value}
            elif isinstance(value, (int, float)):
                mean[key] = float(np.mean([r[key] for r in runs]))
                sd[key] = _sd([r[key] for r in runs])
        out[method] = {"mean": mean, "sd": sd}
    return out


def _sd(values: list[float]) -> float:
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def _cell(stat: dict[str, Any], key: str, layer: str | None) -> str:
    mean, sd = stat["mean"].get(key), stat["sd"].get(key)
    if mean is None:
        return "–"
    if layer is not None:
        mean, sd = mean[layer], sd[layer]
    return f"{mean:.3g} ± {sd:.2g}"


def table(stats: dict[str, Any]) -> str:
    """The headline markdown table: mean ± sd over seeds, a row per method and real images."""
    head = ["method", *(c[0] for c in COLUMNS)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method, stat in stats.items():
        cells = [method, *(_cell(stat, key, layer) for _, key, layer in COLUMNS)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def layer_table(stats: dict[str, Any]) -> str:
    """Every metric and layer, seed means."""
    first = next(iter(stats.values()))["mean"]
    net_layers, judge_layers = list(first["frechet_net"]), list(first["frechet_judge"])
    scalars = [k for k, v in first.items() if not isinstance(v, dict) and k != "classes"]
    head = [
        "method",
        *scalars,
        *(f"FD {ly}" for ly in net_layers),
        *(f"FD judge {ly}" for ly in judge_layers),
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method, stat in stats.items():
        m = stat["mean"]
        cells = [
            *(m.get(k, float("nan")) for k in scalars),
            *(m["frechet_net"][ly] for ly in net_layers),
            *(m["frechet_judge"][ly] for ly in judge_layers),
        ]
        lines.append("| " + " | ".join([method, *(f"{c:.3g}" for c in cells)]) + " |")
    return "\n".join(lines)


def picture_grid(
    run: Path, real_root: Path, path: Path, methods: list[str], k: int = 4, scale: int = 2
) -> Path:
    """Rows of classes; column groups real | each of ``methods`` (k images each)."""
    groups: list[list[list[np.ndarray]]] = []
    for cls in GRID_CLASSES:
        idx = DIGIT_NAMES.index(cls)
        row = [
            [
                np.asarray(Image.open(p).convert("RGB"))
                for p in sorted((real_root / cls).glob("*.png"))[:k]
            ]
        ]
        for method in methods:
            folder = run / "samples" / method / f"fc8_{idx}"
            row.append(
                [
                    np.asarray(Image.open(p).convert("RGB"))
                    for p in sorted(folder.glob("sample_*.png"))[:k]
                ]
            )
        groups.append(row)
    h, w, pad, gap = 32, 32, 2, 12
    width = len(groups[0]) * (k * (w + pad)) + (len(groups[0]) - 1) * gap
    canvas = np.full((len(groups) * (h + pad) + pad, width, 3), 255, np.uint8)
    for r, row in enumerate(groups):
        for g, images in enumerate(row):
            for i, img in enumerate(images):
                y = pad + r * (h + pad)
                x = g * (k * (w + pad) + gap) + i * (w + pad)
                canvas[y : y + h, x : x + w] = img
    big = Image.fromarray(canvas).resize(
        (canvas.shape[1] * scale, canvas.shape[0] * scale), Image.Resampling.NEAREST
    )
    big.save(path)
    return path


def training_note(training: list[dict[str, Any] | None], jobs: int) -> str:
    """The markdown line on the generator's training cost (empty when none was trained)."""
    trained = [g for g in training if g]
    if not trained:
        return ""
    per_seed = ", ".join(f"{g['minutes_per_1k_images']:.3g}" for g in trained)
    return (
        f"\n\nGenerator (fc6 -> pixels, {trained[0]['epochs']} epochs on "
        f"{trained[0]['n_images']} fit-split images, trained once per seed and shared by its "
        f"rows): {per_seed} min per 1k images seen, per seed ({jobs} seeds in parallel; "
        "load averages in the JSON)."
    )


def _verdict(met: bool | None) -> str:
    return "REPORT" if met is None else "MET" if met else "NOT MET"


def run_seed(
    run: Path, seed: int, args: argparse.Namespace, variants: dict[str, Any]
) -> dict[str, Any]:
    """One seed of the demo path; its summary with each method's outlier fraction."""
    run_demo(
        run,
        cache=args.cache,
        config=DemoConfig(
            classes=tuple(args.classes),
            methods=tuple(args.methods),
            n=args.n,
            seed=seed,
            variants=tuple((k, r, tuple(o.items())) for k, (r, o) in variants.items()),
            explain=False,
            generator_epochs=args.generator_epochs,
            split=args.split,
        ),
        reporter=RichReporter(progress=False),
    )
    measured = json.loads((run / "realism.json").read_text())
    decoded = {"generator"} | {k for k, (recipe, _) in variants.items() if recipe == "generator"}
    if (run / "generator").is_dir():
        measured["generator_training"] = generator_cost(run)
    for method, summary in measured["summary"].items():
        if method != "real":
            summary["outlier_fraction"] = outlier_fraction(run, method)
            summary["seconds_per_sample"] = seconds_per_sample(run, method)
        if method in decoded:
            summary[TRAIN_COST] = measured["generator_training"]["minutes_per_1k_images"]
    return measured


def main() -> None:
    """Run the demo path once per seed at benchmark size, measure, print, save."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", default="cpu")
    parser.add_argument("--n", type=int, default=8, help="samples per class and method")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--split", default="test", choices=("test", "validation"))
    parser.add_argument("--variant", action="append", default=[], help="NAME:RECIPE:k=v,...")
    parser.add_argument("--only-variants", action="store_true", help="no default variants")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--classes", nargs="+", default=list(DIGIT_NAMES), choices=DIGIT_NAMES)
    parser.add_argument("--jobs", type=int, default=1, help="seeds run in parallel processes")
    parser.add_argument("--cache", default=None, help="demo cache (default: the demo's)")
    parser.add_argument(
        "--generator-epochs", type=int, default=GENERATOR_EPOCHS, help="the decoder's epochs"
    )
    args = parser.parse_args()
    variants = {} if args.only_variants else dict(VARIANTS)
    variants |= dict(parse_variant(v) for v in args.variant)
    console = Console()
    RESULTS.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, ProcessPoolExecutor(args.jobs) as pool:
        dirs = [Path(tmp) / f"seed{seed}" for seed in args.seeds]
        runs = list(pool.map(run_seed, dirs, args.seeds, repeat(args), repeat(variants)))
        shown = [m for m in GRID_METHODS if m in runs[0]["summary"]]
        if set(GRID_CLASSES) <= set(args.classes):
            meta = json.loads((dirs[0] / "run.json").read_text())
            picture_grid(
                dirs[0],
                dirs[0] / meta["real_root"],
                RESULTS / f"realism-{args.label}-grid.png",
                shown,
            )
    seconds = time.perf_counter() - start
    stats = aggregate([r["summary"] for r in runs])
    means = {m: s["mean"] for m, s in stats.items()}
    checked = goals(means) if all(m in means for m in ("simonyan", *STATS_METHODS)) else []
    md, full = table(stats), layer_table(stats)
    goal_md = "\n".join(f"- {_verdict(g['met'])}: {g['goal']}: {g['value']:.3g}" for g in checked)
    console.print(md)
    console.print(goal_md)
    result = {
        "label": args.label,
        "split": args.split,
        "n_per_class_and_method": args.n,
        "seeds": args.seeds,
        "variants": variants,
        "classes": len(runs[0]["classes"]),
        "seconds": seconds,
        "machine": {"platform": platform.platform(), "processor": platform.processor()},
        "summary": stats,
        "per_seed": [r["summary"] for r in runs],
        "generator_training": [r.get("generator_training") for r in runs],
        "jobs": args.jobs,
        "goals": checked,
        "definitions": runs[0]["definitions"]
        | {
            "outlier_fraction": "fraction of prior-layer units with |z| > 3 under the class model",
            "seconds_per_sample": "sampling wall seconds per image (the batch of every class's "
            "samples over its size), this machine, seeds in parallel (jobs)",
            TRAIN_COST: "the generator's training seconds / 60 per 1000 images seen "
            "(epochs x fit-split store images), this machine, seeds in parallel (jobs)",
        },
    }
    (RESULTS / f"realism-{args.label}.json").write_text(json.dumps(result, indent=1))
    shown = [m for m in GRID_METHODS if m in stats]
    picture = (
        f"![real ({args.split} split) | {' | '.join(shown)}](realism-{args.label}-grid.png)\n\n"
        if set(GRID_CLASSES) <= set(args.classes)
        else f"(No picture grid: it shows the classes {', '.join(GRID_CLASSES)}, and this run "
        f"sampled {len(args.classes)}.)\n\n"
    )
    if not checked:
        goal_md = "(The goals compare `simonyan`, `suppress` and `ancestral`; this run did not "
        goal_md += "sample them all, so none is evaluated.)"
    goal_md += training_note(result["generator_training"], args.jobs)
    (RESULTS / f"realism-{args.label}.md").write_text(
        f"# Realism benchmark ({args.label})\n\n{result['classes']} digit classes "
        f"({', '.join(args.classes)}), {args.n} "
        f"samples per class and method, seeds {', '.join(map(str, args.seeds))}, measured on "
        f"the **{args.split}** split; mean ± sd over seeds; {seconds:.0f} s "
        f"(`python benchmarks/realism.py {' '.join(sys.argv[1:])}`).\n\n"
        f"{md}\n\n## Goals (seed means)\n\n{goal_md}\n\n{picture}"
        f"## Every metric and layer (seed means)\n\n{full}\n\n## Definitions\n\n"
        + "\n".join(f"- **{k}**: {v}" for k, v in result["definitions"].items())
        + "\n"
    )


if __name__ == "__main__":
    main()
