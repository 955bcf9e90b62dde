"""Realism on a real ImageNet network at 224 px: EfficientNet-Lite1 studied, Lite0 judging.

The network under study is EfficientNet-Lite1 with ImageNet weights
(``actstats.net.efficientnet_lite:lite1``, from the ``bench`` extra); the *judge* is
EfficientNet-Lite0 at its own 224 px resolution, which no objective, default or
threshold ever reads. Real images are crops of photos that ship with
scikit-image and scikit-learn (:mod:`actstats.demo.photos`: Egyptian cat, espresso,
palace, moped, tripod) in three splits never mixed: ``fit`` (the statistics),
``validation`` (choosing defaults: ``--split validation``) and ``test`` (the
numbers reported: the default).

The path is the library's, as the CLI runs it: ``collect`` -> ``fit_store`` ->
``sample_units`` with each row's method and configuration. Per row, class and
seed one batch of all classes' logits units is sampled; metrics per row and
class (defined in ``DEFINITIONS``): judge top-1 and p(target), KID in the
judge's pooled features against the held-out real crops, judge-feature
diversity against the real crops', memorization (nearest fit-split crop vs nearest held-out
crop), p(target) in Lite1 and seconds per sample.
Rows: ``simonyan``; ``simonyan+reg`` (suppress's regularizers, no statistics; the
headline baseline); ``lucent`` (FFT-decorrelated parameterization, jitter, TV,
no statistics); ``suppress``, its ablations ``prior only`` / ``outliers only``;
``ancestral`` and ``ancestral-stats`` (its regularizers and target, no chain);
``code-prior`` (its statistics-free ablation, no clip box, is not a row yet);
``generator`` and ``generator+nll`` (DGN-AM: a decoder from Lite1's pooled head to
pixels, trained on the fit split's store for ``--generator-epochs`` and cached, the
second with the class model's NLL of the code at the digits benchmark's weight);
``real`` (test crops not used as reference). Each number is a mean over ``--seeds`` seeds, with the
standard deviation over seeds. The validation split samples with other seeds
(:data:`VALIDATION_SEED0` on) than the test split (0 on): sampling never reads the real
crops, so with shared seeds the judge's top-1 on validation would be the test's.

Choosing a default is done on the validation split with ``--try ROW:KEY=VALUE[,KEY=VALUE]``,
which adds a row ``ROW KEY=VALUE`` -- ``ROW``'s method and overrides plus these (e.g.
``--split validation --rows ancestral --try ancestral:target_weight=0.2``).

Usage: ``python benchmarks/realism_imagenet.py [--split test] [--seeds 3] [--steps 200]
[--rows simonyan,suppress] [--try ROW:KEY=VALUE] [--label NAME] [--cache DIR]``. Writes
``benchmarks/results/realism-imagenet-<label>.{json,md}`` and ``-grid.png``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from actstats import load
from actstats.demo.photos import PHOTO_CLASSES, write_photo_folders
from actstats.eval.metrics import diversity, kernel_inception_distance, memorization
from actstats.eval.realism import pooled_features, to_inputs
from actstats.net.names import imagenet_wnids
from actstats.net.network import Network, load_network
from actstats.pipeline.collect import collect
from actstats.pipeline.fit import fit_store
from actstats.pipeline.sample import load_decoder, sample_units
from actstats.pipeline.train_generator import run_train_generator
from actstats.synth import RenderConfig, default_config
from actstats.synth.generator_train import GeneratorTrainingConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
from realism import (  # the digits benchmark's parser, generator cost and NLL weight
    GENERATOR_NLL_WEIGHT,
    field_value,
    generator_cost,
)

RESULTS = Path(__file__).resolve().parent / "results"
NET = "actstats.net.efficientnet_lite:lite1"
JUDGE = "actstats.net.efficientnet_lite:lite0"
LOGITS = "net._fc"
JUDGE_FEATURES = "net._dropout"  # Lite0's globally pooled head (1280-D), the FID-style features
COUNTS = (64, 16, 16)  # crops per class: fit, validation, test
N_REAL = 3  # crops per class of the real row; the rest are the reference
VALIDATION_SEED0 = 1000  # first seed of the validation split (the test split's is 0)
GENERATOR_LAYER = "net._dropout"  # Lite1's pooled head (1280-D): DGN-AM decodes fc6
GENERATOR_EPOCHS = 5  # ~3 min per epoch of 320 crops on 2 CPUs

_NO_STATS = {"prior_weight": 0.0, "suppress_weight": 0.0}
_ANCESTRAL_REGS = {  # ancestral's loop knobs (regularizers, target weight), no chain
    f.name: getattr(default_config("ancestral"), f.name) for f in dataclasses.fields(RenderConfig)
}
#: row -> (method, overrides of the method's defaults)
ROWS: dict[str, tuple[str, dict[str, Any]]] = {
    "simonyan": ("simonyan", {}),
    "simonyan+reg": ("suppress", _NO_STATS),
    "lucent": (
        "simonyan",
        {"param": "fft", "l2_weight": 0.0, "tv_weight": 0.5, "jitter": 1 / 16, "lr": 0.05},
    ),
    "suppress": ("suppress", {}),
    "suppress prior only": ("suppress", {"suppress_weight": 0.0}),
    "suppress outliers only": ("suppress", {"prior_weight": 0.0}),
    "ancestral": ("ancestral", {}),
    "ancestral-stats": ("suppress", {**_ANCESTRAL_REGS, **_NO_STATS}),
    "code-prior": ("code-prior", {}),
    "generator": ("generator", {}),
    "generator+nll": ("generator", {"prior_weight": GENERATOR_NLL_WEIGHT}),
}
GRID_ROWS = ("simonyan", "lucent", "suppress", "ancestral", "generator")

DEFINITIONS = {
    "judge_top1": "fraction of images Lite0 (never optimized) ranks the class first",
    "judge_p": "Lite0's mean softmax probability of the class",
    "kid": "unbiased polynomial-kernel MMD^2 (KID) between one seed's images of all classes "
    "and the held-out real crops of all classes, in Lite0's pooled features; mean ± sd over seeds",
    "kid_per_class": "KID of a class's images (all seeds) against its own held-out crops; "
    "class mean",
    "diversity": "mean pairwise distance of Lite0 pooled features within a class",
    "diversity_ratio": "diversity / the real crops' diversity (same count per class)",
    "p_target": "Lite1's mean softmax probability of the class (the optimized network)",
    "memorization": "per image, the judge-feature distance to the nearest fit-split crop (what "
    "the statistics saw) over that to the nearest held-out crop (the larger set subsampled to "
    "the smaller's size); median per class, mean over classes: ~0 copies, ~1 as new as real",
    "seconds_per_sample": "wall seconds of the batch / images in it",
}


def tried_row(spec: str) -> tuple[str, tuple[str, dict[str, Any]]]:
    """``ROW:KEY=VALUE[,KEY=VALUE]`` -> (``"ROW KEY=VALUE ..."``, (method, overrides)).

    Values are parsed as the digits benchmark's ``--variant`` fields are
    (:func:`realism.field_value`: int, float, true/false, else the string ``fft``);
    keys are checked against the method's config when the row is sampled.
    """
    base, sep, pairs = spec.partition(":")
    if not sep or base not in ROWS or not pairs:
        choices = ", ".join(ROWS)
        raise ValueError(f"--try {spec!r}: expected ROW:KEY=VALUE with ROW one of {choices}")
    method, overrides = ROWS[base]
    extra = {}
    for pair in pairs.split(","):
        key, eq, text = pair.partition("=")
        if not eq:
            raise ValueError(f"--try {spec!r}: {pair!r} is not KEY=VALUE")
        extra[key.strip()] = field_value(text)
    return f"{base} {pairs.replace(',', ' ')}", (method, {**overrides, **extra})


# ------------------------------------------------------------------ data
def prepare(cache: Path) -> tuple[dict[str, Path], Path]:
    """Photo splits, the fit split's store and model file (each made once, then cached)."""
    folders = write_photo_folders(cache / "photos", COUNTS)
    store, models = cache / "lite1.zarr", cache / "lite1.models"
    if not (models / "manifest.json").exists():
        collect(folders["fit"], store, network=NET, device="cpu", batch_size=32, scheduler="sync")
        fit_store(store, models, overwrite=True, scheduler="sync")
    return folders, models


def trained_generator(cache: Path, epochs: int) -> Path:
    """The decoder ``generator`` rows use: trained once per epoch count on the fit store
    (``actstats train-generator``'s library call; a stopped training resumes)."""
    folder = cache / f"generator-e{epochs}" / "generator"
    if not (folder / "manifest.json").exists():
        config = GeneratorTrainingConfig(layer=GENERATOR_LAYER, epochs=epochs, batch_size=32)
        run_train_generator(
            cache / "lite1.zarr", GENERATOR_LAYER, folder, config=config, device="cpu"
        )
    return folder


def real_crops(network: Network, folder: Path, wnid: str) -> np.ndarray:
    """A split's crops of a class as uint8 (n, 224, 224, 3), preprocessed as collect does."""
    pre = network.preprocessing
    files = sorted((folder / wnid).glob("*.png"))
    x = torch.stack([pre(Image.open(f).convert("RGB")) for f in files])
    return pre.to_uint8(x)


# ------------------------------------------------------------------ metrics
def judge_outputs(judge: Network, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lite0's softmax (n, 1000) and pooled features (n, 1280) of uint8 images."""
    with torch.inference_mode():
        probs = judge.module(to_inputs(judge, images)).softmax(1).double().numpy()
    feats = pooled_features(judge, images, [JUDGE_FEATURES])[JUDGE_FEATURES]
    return probs, feats


def class_metrics(
    images: np.ndarray,
    index: int,
    judge: Network,
    reference: np.ndarray,
    real_div: float,
    fitted: np.ndarray,
) -> dict[str, float]:
    """Judge top-1, p, KID vs ``reference`` features, diversity (and its ratio to real),
    and memorization: the median over images of the distance to the nearest ``fitted``
    crop (the fit split, which the statistics saw) over that to the nearest reference
    crop (never seen)."""
    probs, feats = judge_outputs(judge, images)
    div = diversity(feats) if len(images) > 1 else float("nan")
    return {
        "judge_top1": float(np.mean(probs.argmax(1) == index)),
        "judge_p": float(np.mean(probs[:, index])),
        "kid": kernel_inception_distance(feats, reference) if len(images) > 1 else float("nan"),
        "diversity": div,
        "diversity_ratio": div / real_div,
        "memorization": float(np.median(memorization(feats, fitted, reference).ratio)),
    }


def run_row(
    row: str,
    models: Any,
    network: Network,
    seeds: Sequence[int],
    steps: int,
    generator: Path | None = None,
) -> tuple[dict[int, list[np.ndarray]], dict[int, list[float]], float]:
    """Images per seed and class, p(target) per seed and class, seconds per sample
    (``generator``: the decoder of ``generator`` rows; its training is not counted)."""
    method, overrides = ROWS[row]
    decoder = {"decoder": load_decoder(generator)} if method == "generator" and generator else {}
    config = default_config(method, **{**overrides, "steps": steps, **decoder})
    neurons = [f"{LOGITS}:{c.index}" for c in PHOTO_CLASSES]
    images, probs, seconds, count = {}, {}, 0.0, 0
    for seed in seeds:
        start = time.perf_counter()
        results = sample_units(models, network, neurons, method, 1, seed, config=config)
        seconds += time.perf_counter() - start
        count += len(results)
        images[seed] = [r[0].image for r in results]
        probs[seed] = [float(r[0].target_probability) for r in results]
    return images, probs, seconds / count


def summarize(per_seed: list[dict[str, float]]) -> dict[str, float]:
    """Mean and standard deviation over seeds of each metric."""
    out = {}
    for key in per_seed[0]:
        vals = np.array([m[key] for m in per_seed], dtype=np.float64)
        out[key], out[key + "_sd"] = float(vals.mean()), float(vals.std(ddof=0))
    return out


# ------------------------------------------------------------------ report
def table(summary: dict[str, dict[str, Any]]) -> str:
    """Markdown: one line per row, mean ± sd over seeds."""
    keys = (
        "judge_top1",
        "judge_p",
        "kid",
        "kid_per_class",
        "diversity_ratio",
        "memorization",
        "p_target",
        "seconds_per_sample",
    )
    head = [
        "row",
        "judge top-1",
        "judge p",
        "KID (all classes)",
        "KID per class",
        "diversity / real",
        "memorization",
        "p(target) Lite1",
        "s/sample",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row, s in summary.items():
        cells = [
            f"{s[k]:.3g}" if k + "_sd" not in s else f"{s[k]:.3g} ± {s[k + '_sd']:.2g}"
            for k in keys
        ]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def class_table(per_class: dict[str, dict[str, dict[str, float]]]) -> str:
    """Markdown: judge top-1 / KID per row and class (seed means)."""
    names = [c.name for c in PHOTO_CLASSES]
    lines = ["| row | " + " | ".join(names) + " |", "|" + "---|" * (len(names) + 1)]
    for row, by_class in per_class.items():
        cells = [f"{by_class[n]['judge_top1']:.2f} / {by_class[n]['kid']:.3f}" for n in names]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def grid(real: list[np.ndarray], rows: dict[str, list[np.ndarray]], path: Path) -> None:
    """Classes down, ``real | GRID_ROWS`` across, 112 px tiles."""
    cols = [real, *(rows[r] for r in GRID_ROWS if r in rows)]
    tile = 112
    canvas = Image.new("RGB", (tile * len(cols), tile * len(real)), "white")
    for j, col in enumerate(cols):
        for i, img in enumerate(col):
            canvas.paste(Image.fromarray(img).resize((tile, tile)), (j * tile, i * tile))
    tmp = path.with_suffix(".tmp.png")
    canvas.save(tmp)
    tmp.replace(path)


def measure_row(
    images: dict[int, list[np.ndarray]],
    probs: dict[int, list[float]],
    judge: Network,
    refs: dict[str, np.ndarray],
    real_div: dict[str, float],
    fitted: dict[str, np.ndarray],
) -> tuple[dict[str, Any], dict[str, dict[str, float]], list[dict[str, Any]]]:
    """Summary (mean ± sd over seeds), per-class metrics (the seeds' images of a class)
    and the judge's misses (which class it named instead, per seed and class).

    Per seed: judge top-1 / p and p(target) over the classes, and KID of the seed's
    images of every class against the pooled reference of every class. Per class:
    all seeds' images of the class against its own reference.
    """
    seeds = sorted(images)
    pooled_ref = np.concatenate([refs[c.name] for c in PHOTO_CLASSES])
    per_seed, misses = [], []
    wnids = imagenet_wnids()
    for s in seeds:
        p, feats = judge_outputs(judge, np.stack(images[s]))
        idx = np.array([c.index for c in PHOTO_CLASSES])
        misses += [
            {
                "seed": s,
                "class": c.name,
                "judge_says": wnids[int(p[k].argmax())],
                "judge_p_says": float(p[k].max()),
                "judge_p_class": float(p[k, c.index]),
            }
            for k, c in enumerate(PHOTO_CLASSES)
            if p[k].argmax() != c.index
        ]
        per_seed.append(
            {
                "judge_top1": float(np.mean(p.argmax(1) == idx)),
                "judge_p": float(np.mean(p[np.arange(len(idx)), idx])),
                "kid": kernel_inception_distance(feats, pooled_ref),
                "p_target": float(np.mean(probs[s])),
            }
        )
    by_class = {}
    for k, c in enumerate(PHOTO_CLASSES):
        imgs = np.stack([images[s][k] for s in seeds])
        m = class_metrics(imgs, c.index, judge, refs[c.name], real_div[c.name], fitted[c.name])
        by_class[c.name] = m | {"p_target": float(np.mean([probs[s][k] for s in seeds]))}
    summary = summarize(per_seed) | {
        "kid_per_class": float(np.mean([m["kid"] for m in by_class.values()])),
        "diversity_ratio": float(np.mean([m["diversity_ratio"] for m in by_class.values()])),
        "memorization": float(np.mean([m["memorization"] for m in by_class.values()])),
    }
    return summary, by_class, misses


def write_results(
    result: dict[str, Any], label: str, real: list[np.ndarray], rows: dict[str, list[np.ndarray]]
) -> None:
    """JSON, markdown and the picture grid (``real`` | ``rows``) under benchmarks/results/."""
    RESULTS.mkdir(exist_ok=True)
    stem = RESULTS / f"realism-imagenet-{label}"
    grid(real, rows, stem.with_name(stem.name + "-grid.png"))
    tmp = stem.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(stem.with_suffix(".json"))
    md = [
        f"# Realism on EfficientNet-Lite1 at 224 px ({label})",
        "",
        f"Machine: {result['machine']}; split `{result['split']}`; seeds {result['seeds']}; "
        f"{result['steps']} steps; one sample per class and seed; judge: EfficientNet-Lite0.",
        "",
        table(result["summary"]),
        "",
        "Per class, judge top-1 / KID (the seeds' images of the class against its reference):",
        "",
        class_table(result["per_class"]),
        "",
        "The judge's misses (seed, class: the class it named, its p; p of the true class):",
        "",
        *(
            f"- {row}: seed {m['seed']}, {m['class']}: {m['judge_says']} "
            f"({m['judge_p_says']:.2f}; true class {m['judge_p_class']:.2f})"
            for row, ms in result["judge_misses"].items()
            for m in ms
        ),
        "",
        *(f"- **{k}**: {v}" for k, v in DEFINITIONS.items()),
        "",
    ]
    tmp = stem.with_suffix(".md.tmp")
    tmp.write_text("\n".join(md))
    tmp.replace(stem.with_suffix(".md"))


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; returns what it writes."""
    global PHOTO_CLASSES  # the metrics iterate over the chosen classes
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", default="test", choices=("validation", "test"))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=default_config("suppress").steps)
    parser.add_argument("--rows", default=",".join(ROWS))
    parser.add_argument(
        "--classes", type=int, default=len(PHOTO_CLASSES), help="the first K photo classes"
    )
    parser.add_argument("--generator-epochs", type=int, default=GENERATOR_EPOCHS)
    parser.add_argument("--try", dest="tries", action="append", default=[], metavar="ROW:K=V")
    parser.add_argument("--label", default=None)
    parser.add_argument("--cache", default=os.environ.get("ACTSTATS_CACHE", "/tmp/actstats"))
    args = parser.parse_args(argv)
    rows = [r for r in args.rows.split(",") if r]
    for spec in args.tries:
        try:
            name, row = tried_row(spec)
        except ValueError as exc:
            parser.error(str(exc))
        ROWS[name] = row
        rows.append(name)
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        parser.error(f"--rows {unknown[0]}: choose from {', '.join(ROWS)}")
    PHOTO_CLASSES = PHOTO_CLASSES[: args.classes]
    cache = Path(args.cache) / "realism-imagenet"
    folders, models_path = prepare(cache)
    decodes = any(ROWS[r][0] == "generator" for r in rows)
    generator = trained_generator(cache, args.generator_epochs) if decodes else None
    models = load(models_path)
    network = load_network(NET, device="cpu")
    judge = load_network(JUDGE, device="cpu")
    seed0 = VALIDATION_SEED0 if args.split == "validation" else 0
    seeds = list(range(seed0, seed0 + args.seeds))

    refs, real, real_div, fitted = {}, {}, {}, {}
    for c in PHOTO_CLASSES:
        fitted[c.name] = judge_outputs(judge, real_crops(network, folders["fit"], c.wnid))[1]
        crops = real_crops(network, folders[args.split], c.wnid)
        real[c.name] = crops[: len(seeds)]  # as many real crops as samples per class
        refs[c.name] = judge_outputs(judge, crops[len(seeds) :])[1]
        real_div[c.name] = diversity(judge_outputs(judge, real[c.name])[1]) if seeds[1:] else 1.0
    real_images = {s: [real[c.name][k] for c in PHOTO_CLASSES] for k, s in enumerate(seeds)}
    with torch.inference_mode():
        real_probs = {
            s: [
                float(network.module(to_inputs(network, img[None])).softmax(1)[0, c.index])
                for img, c in zip(real_images[s], PHOTO_CLASSES, strict=True)
            ]
            for s in seeds
        }
    summary, per_class, misses = {}, {}, {}
    summary["real"], per_class["real"], misses["real"] = measure_row(
        real_images, real_probs, judge, refs, real_div, fitted
    )
    summary["real"]["seconds_per_sample"] = 0.0
    grid_rows: dict[str, list[np.ndarray]] = {}
    label = args.label or f"{args.split}-cpu"
    result: dict[str, Any] = {}
    for row in rows:
        images, probs, secs = run_row(row, models, network, seeds, args.steps, generator)
        summary[row], per_class[row], misses[row] = measure_row(
            images, probs, judge, refs, real_div, fitted
        )
        summary[row]["seconds_per_sample"] = secs
        grid_rows[row] = images[seeds[0]]
        print(row, {k: round(v, 3) for k, v in summary[row].items()}, flush=True)
        result = {
            "machine": f"{platform.node() or 'unknown'} "
            f"({platform.processor() or platform.machine()}, {os.cpu_count()} CPUs), "
            f"torch {torch.__version__}",
            "split": args.split,
            "seeds": seeds,
            "steps": args.steps,
            "classes": [c.name for c in PHOTO_CLASSES],
            "rows": {
                r: {"method": ROWS[r][0], "overrides": ROWS[r][1]} for r in summary if r in ROWS
            },
            "definitions": DEFINITIONS,
            "generator_training": generator_cost(generator.parent) if generator else None,
            "summary": summary,
            "per_class": per_class,
            "judge_misses": misses,
        }
        # written after every row: a long run that is stopped keeps what it measured
        write_results(result, label, [real[c.name][0] for c in PHOTO_CLASSES], grid_rows)
    print(table(summary))
    return result


if __name__ == "__main__":
    main()
