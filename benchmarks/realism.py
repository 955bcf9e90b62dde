"""Realism benchmark: do statistics of real activations give more realistic images?

On the digits network, for every class, ``--n`` samples per method (fixed seed)
go through the demo's real path (collect -> fit -> sample) and are measured by
:mod:`actstats.eval.realism` (see its docstring for every definition). Goals:

* target probability >= 0.9 for every method (mean over all its samples);
* pixel NLL ratio (mean NLL generated / mean NLL real, per class, averaged) <= 3
  for ``suppress`` and ``ancestral``;
* Fréchet distance to held-out real activations >= 5x lower than ``simonyan``'s
  at every measured layer, in the optimized network and in the judge network
  (layer distances are class means; the ratio is simonyan / method);
* judge agreement and diversity are reported without a goal, beside the real
  images measured the same way (``real``: n random fitting-half images).

The ``generator`` rows (reported without a goal) are DGN-AM: a decoder trained
on the run's store (fc6 -> pixels, ``--generator-epochs``) and the code clipped
to ``[0, mean + 3 std]``; ``generator+nll`` adds the class model's NLL of the
code (``prior_weight`` 1). The ``memorization`` column is
:func:`actstats.eval.metrics.memorization` (1 = no nearer the fitting half than the
held-out half; the ``real`` row, fitting-half images, is 0 by construction), and
``realism-<label>-neighbours.png`` shows generator samples beside their nearest
fitting-half and held-out digits. The generator's training time is reported
as minutes per 1k images (one pass), with the load average it ran under.

Ablation, reported without a goal: ``simonyan+reg`` is the ``suppress`` recipe
(its noise init, jitter, TV, L2, blur every 4 steps, steps) with the statistics
switched off (``prior_weight`` 0, ``suppress_weight`` 0). ``simonyan`` ->
``simonyan+reg`` is what the regularizers give; ``simonyan+reg`` -> ``suppress``
is what the statistics give. One line per statistics method compares them.

Usage: ``python benchmarks/realism.py [--label NAME] [--n 8] [--cache DIR]
[--generator-epochs 10]``. Writes ``benchmarks/results/realism-<label>.json``,
``.md``, ``-grid.png`` and ``-neighbours.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from rich.console import Console

from actstats.cli.demo import RichReporter
from actstats.demo.digits import DIGIT_NAMES
from actstats.demo.run import DemoConfig, run_demo

RESULTS = Path(__file__).resolve().parent / "results"
STATS_METHODS = ("suppress", "ancestral")
GRID_CLASSES = ("zero", "two", "four", "seven", "eight")
#: The suppress recipe without its statistics: what the regularizers alone give.
ABLATION = "simonyan+reg"
ABLATION_VARIANT = (ABLATION, "suppress", (("prior_weight", 0.0), ("suppress_weight", 0.0)))
#: DGN-AM with the class model's NLL on the code.
GENERATOR_NLL_VARIANT = ("generator+nll", "generator", (("prior_weight", 1.0),))
GRID_METHODS = ("simonyan", ABLATION, *STATS_METHODS, "generator", "generator+nll")


def goals(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Each goal with its measured value and whether it is met."""
    rows = []
    for method in ("simonyan", *STATS_METHODS):
        p = summary[method]["target_probability"]
        rows.append({"goal": f"{method}: target probability >= 0.9", "value": p, "met": p >= 0.9})
    for method in STATS_METHODS:
        r = summary[method]["pixel_nll_ratio"]
        rows.append({"goal": f"{method}: pixel NLL ratio <= 3", "value": r, "met": r <= 3.0})
        for key in ("frechet_net", "frechet_judge"):
            base, mine = summary["simonyan"][key], summary[method][key]
            worst = min(base[ly] / mine[ly] for ly in base)
            rows.append(
                {
                    "goal": f"{method}: {key} >= 5x lower than simonyan at every layer "
                    "(worst layer's ratio)",
                    "value": worst,
                    "met": worst >= 5.0,
                }
            )
    if ABLATION in summary:
        rows.extend(ablation(summary))
    return rows


def _worst_ratio(base: dict[str, float], mine: dict[str, float]) -> float:
    return min(base[ly] / mine[ly] for ly in base)


def ablation(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Per statistics method, the comparison with ``simonyan+reg`` (reported, ``met`` None)."""
    ref = summary[ABLATION]
    rows = []
    for method in STATS_METHODS:
        s = summary[method]
        value = _worst_ratio(ref["frechet_net"], s["frechet_net"])
        rows.append(
            {
                "goal": f"{method} vs {ABLATION} (reported, no goal): worst-layer FD ratio "
                f"{ABLATION}/{method} net {value:.3g}, judge "
                f"{_worst_ratio(ref['frechet_judge'], s['frechet_judge']):.3g}; "
                f"pixel NLL ratio {s['pixel_nll_ratio']:.3g} vs {ref['pixel_nll_ratio']:.3g}; "
                f"judge agrees {s['judge_agreement']:.3g} vs {ref['judge_agreement']:.3g}; "
                f"p(target) {s['target_probability']:.3g} vs {ref['target_probability']:.3g}; "
                "worst-layer FD ratio net",
                "value": value,
                "met": None,
            }
        )
    return rows


def table(summary: dict[str, Any]) -> str:
    """One markdown table: a row per method (and real images)."""
    net_layers = list(next(iter(summary.values()))["frechet_net"])
    judge_layers = list(next(iter(summary.values()))["frechet_judge"])
    head = [
        "method",
        "p(target)",
        "worst class p",
        "judge agrees",
        "pixel NLL ratio",
        "ΔNLL nats/px",
        "diversity px",
        "diversity judge",
        "memorization",
        *(f"FD {ly}" for ly in net_layers),
        *(f"FD judge {ly}" for ly in judge_layers),
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method, s in summary.items():
        cells = [
            method,
            s["target_probability"],
            s["min_target_probability"],
            s["judge_agreement"],
            s["pixel_nll_ratio"],
            s["pixel_nll_excess"],
            s["diversity_pixels"],
            s["diversity_judge"],
            s["memorization_ratio"],
            *(s["frechet_net"][ly] for ly in net_layers),
            *(s["frechet_judge"][ly] for ly in judge_layers),
        ]
        lines.append(
            "| " + " | ".join(c if isinstance(c, str) else f"{c:.3g}" for c in cells) + " |"
        )
    return "\n".join(lines)


def picture_grid(run: Path, real_root: Path, path: Path, k: int = 4, scale: int = 2) -> Path:
    """Rows of classes; column groups real | each of ``GRID_METHODS`` (k images each)."""
    groups: list[list[list[np.ndarray]]] = []
    for cls in GRID_CLASSES:
        idx = DIGIT_NAMES.index(cls)
        row = [
            [
                np.asarray(Image.open(p).convert("RGB"))
                for p in sorted((real_root / cls).glob("*.png"))[:k]
            ]
        ]
        for method in GRID_METHODS:
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


def _load(folder: Path, pattern: str = "*.png") -> list[np.ndarray]:
    return [np.asarray(Image.open(p).convert("RGB")) for p in sorted(folder.glob(pattern))]


def neighbour_grid(
    run: Path, run_meta: dict[str, Any], measured: dict[str, Any], path: Path, scale: int = 3
) -> Path:
    """Per class, generator samples with their nearest fitting-half and held-out digits.

    Each triple is sample | nearest fitting-half digit | nearest held-out digit, in the
    judge's features (the neighbours :func:`actstats.eval.metrics.memorization` found).
    """
    fit_root, hold_root = run / run_meta["real_root"], run / run_meta["holdout_root"]
    rows = []
    for cls in GRID_CLASSES:
        m = measured["classes"][cls]["generator"]
        samples = _load(
            run / "samples" / "generator" / f"fc8_{DIGIT_NAMES.index(cls)}", "sample_*.png"
        )
        fit, hold = _load(fit_root / cls), _load(hold_root / cls)
        row = []
        for i, img in enumerate(samples[:4]):
            gap = np.full((32, 6, 3), 255, np.uint8)
            row += [img, fit[m["nearest_fit"][i]], hold[m["nearest_holdout"][i]], gap]
        rows.append(np.concatenate(row, axis=1))
    canvas = np.concatenate(
        [np.pad(r, ((2, 2), (0, 0), (0, 0)), constant_values=255) for r in rows]
    )
    Image.fromarray(canvas).resize(
        (canvas.shape[1] * scale, canvas.shape[0] * scale), Image.Resampling.NEAREST
    ).save(path)
    return path


def generator_cost(run: Path) -> dict[str, Any]:
    """Training time of the run's generator: minutes per 1k images (one pass) and the total."""
    manifest = json.loads((run / "generator" / "manifest.json").read_text())
    epochs = len(manifest["history"])
    passes = epochs * manifest["n_images"] / 1000.0
    return {
        "epochs": epochs,
        "n_images": manifest["n_images"],
        "seconds": manifest["seconds"],
        "minutes_per_1k_images": manifest["seconds"] / 60.0 / passes,
        "training": manifest["training"],
        "history_first_last": [manifest["history"][0], manifest["history"][-1]],
    }


def _verdict(met: bool | None) -> str:
    return "REPORT" if met is None else "MET" if met else "NOT MET"


def main() -> None:
    """Run the demo path at benchmark size, measure, print, save."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", default="cpu")
    parser.add_argument("--n", type=int, default=8, help="samples per class and method")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", default=None, help="demo cache (default: the demo's)")
    parser.add_argument("--out", default=None, help="run folder (default: a temporary one)")
    parser.add_argument("--generator-epochs", type=int, default=10)
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="measure the finished run in --out again instead of running the demo "
        "(its wall time is then not known: reported as null)",
    )
    args = parser.parse_args()
    if args.reuse and not args.out:
        parser.error("--reuse needs --out RUN")
    console = Console()
    RESULTS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(args.out or tmp)
        start = time.perf_counter()
        load_before = os.getloadavg()
        if not args.reuse:
            run_demo(
                run,
                cache=args.cache,
                config=DemoConfig(
                    n=args.n,
                    seed=args.seed,
                    variants=(ABLATION_VARIANT, GENERATOR_NLL_VARIANT),
                    explain=False,
                    generator_epochs=args.generator_epochs,
                ),
                reporter=RichReporter(progress=False),
            )
        seconds = None if args.reuse else time.perf_counter() - start
        measured = json.loads((run / "realism.json").read_text())
        run_meta = json.loads((run / "run.json").read_text())
        grid = picture_grid(
            run, run / run_meta["real_root"], RESULTS / f"realism-{args.label}-grid.png"
        )
        neighbours = neighbour_grid(
            run, run_meta, measured, RESULTS / f"realism-{args.label}-neighbours.png"
        )
        cost = generator_cost(run) | {"load_average_before": load_before, "after": os.getloadavg()}
    summary = measured["summary"]
    checked = goals(summary)
    md = table(summary)
    goal_md = "\n".join(f"- {_verdict(g['met'])}: {g['goal']}: {g['value']:.3g}" for g in checked)
    console.print(md)
    console.print(goal_md)
    result = {
        "label": args.label,
        "n_per_class_and_method": args.n,
        "seed": args.seed,
        "classes": len(measured["classes"]),
        "seconds": seconds,
        "machine": {"platform": platform.platform(), "processor": platform.processor()},
        "summary": summary,
        "goals": checked,
        "per_class": measured["classes"],
        "definitions": measured["definitions"],
        "grid": grid.name,
        "neighbours": neighbours.name,
        "generator_training": cost,
    }
    (RESULTS / f"realism-{args.label}.json").write_text(json.dumps(result, indent=1))
    (RESULTS / f"realism-{args.label}.md").write_text(
        f"# Realism benchmark ({args.label})\n\n{len(measured['classes'])} digit classes, "
        f"{args.n} samples per class and method, seed {args.seed}, "
        + (f"{seconds:.0f} s (whole demo path)" if seconds is not None else "run measured again")
        + f".\n\n{md}\n\n## Goals\n\n{goal_md}\n\n"
        f"![real | {' | '.join(GRID_METHODS)}]({grid.name})\n\n"
        f"## Generator\n\nDecoder fc6 -> pixels trained {cost['epochs']} epochs on "
        f"{cost['n_images']} images in {cost['seconds']:.0f} s: "
        f"{cost['minutes_per_1k_images']:.2f} CPU minutes per 1k images per pass "
        f"(1-min load average {cost['load_average_before'][0]:.1f} when this script started, "
        f"on {os.cpu_count()} cores shared with other jobs).\n\n"
        f"Generator samples | nearest fitting-half digit | nearest held-out digit "
        f"(judge features):\n\n![neighbours]({neighbours.name})\n\n## Definitions\n\n"
        + "\n".join(f"- **{k}**: {v}" for k, v in measured["definitions"].items())
        + "\n"
    )


if __name__ == "__main__":
    main()
