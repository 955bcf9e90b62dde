"""``actstats demo``: the whole pipeline on scikit-learn's digits, on a CPU, in minutes.

Nothing is downloaded. The first run writes the digits as class folders (the
fitting half and the held-out half) and trains the VGG-shaped digits network
and the judge network, seeded, under a cache directory (``--cache``, else
``$ACTSTATS_CACHE``, else ``~/.cache/actstats``; in ``demo-v1/``). Then it runs
the same library calls as ``actstats collect``, ``actstats fit`` and
``actstats sample`` (for every class's output unit, with every method), measures
realism (:mod:`actstats.realism`) and writes the report (:mod:`actstats.report`).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from actstats import realism
from actstats.collect import collect
from actstats.digits import (
    DIGIT_NAMES,
    digits_judge,
    digits_vgg,
    load_digit_folder_tensors,
    train_classifier,
    write_digit_folders,
)
from actstats.errors import ActstatsError
from actstats.fit import fit_store
from actstats.network import Network, load_network
from actstats.report import write_report
from actstats.sample import run_sample
from actstats.synth.recipes import METHODS

__all__ = [
    "DEMO_EXPLAIN_LAYER",
    "DEMO_LAYERS",
    "DEMO_REDUCE",
    "DemoAssets",
    "DemoConfig",
    "box_iou",
    "cache_dir",
    "explain_digits",
    "ink_box",
    "measure_realism",
    "prepare_assets",
    "run_demo",
]

#: Stored layers and reductions, as in ``pipelines/digits.toml``.
#: The shallow layers (4x4 cells of 8x8 / 4x4 pixels) constrain local image statistics
#: (ink colour, stroke width, smoothness); the deep ones the digit's shape.
DEMO_LAYERS = ("conv1_1", "conv2_1", "conv3_2", "conv4_1", "conv5_1", "fc6", "fc7", "fc8")
DEMO_REDUCE = {
    "conv1_1": "grid:4",
    "conv2_1": "grid:4",
    "conv3_2": "grid:2",
    "conv4_1": "grid:2",
    "conv5_1": "grid:2",
}
#: The conv layer the demo inverts and dreams at (stored, so the inversion has a prior).
DEMO_EXPLAIN_LAYER = "conv3_2"
NET_FACTORY = "actstats.digits:digits_vgg"
JUDGE_FACTORY = "actstats.digits:digits_judge"
_CACHE_VERSION = "demo-v1"


@dataclass(frozen=True)
class DemoConfig:
    """What the demo samples: which classes, methods, how many images, how many steps."""

    classes: tuple[str, ...] = DIGIT_NAMES
    methods: tuple[str, ...] = METHODS
    n: int = 4
    steps: int | None = None  # None: each method's default
    seed: int = 0
    #: Extra sample sets outside the library's methods, for ablations:
    #: ``(label, recipe, ((SynthConfig field, value), ...))``; each is sampled with
    #: ``recipe``'s defaults plus the overrides and recorded as method ``label``.
    variants: tuple[tuple[str, str, tuple[tuple[str, Any], ...]], ...] = ()
    #: Run the single-image tools (saliency, localization, inversion, dream) on held-out digits.
    explain: bool = True

    @classmethod
    def quick(cls) -> DemoConfig:
        """Three classes, three samples, few steps: the smoke test of the whole path."""
        return cls(classes=("zero", "one", "seven"), n=3, steps=40)


@dataclass(frozen=True)
class DemoAssets:
    """The cached inputs: real class folders (fitting and held-out halves) and weights."""

    train_root: Path
    holdout_root: Path
    weights: Path
    judge_weights: Path
    accuracy: dict[str, float] = field(default_factory=dict)


def cache_dir(cache: str | Path | None = None) -> Path:
    """``cache``, else ``$ACTSTATS_CACHE``, else ``~/.cache/actstats``; plus ``demo-v1``."""
    base = cache or os.environ.get("ACTSTATS_CACHE") or Path.home() / ".cache" / "actstats"
    return Path(base).expanduser() / _CACHE_VERSION


def _assets_cached(cache: str | Path | None = None) -> bool:
    """Whether :func:`prepare_assets` will only read the cache (nothing to write or train)."""
    root = cache_dir(cache)
    folders = (root / "digits-train", root / "digits-holdout")
    weights = (root / "digits_vgg.pth", root / "digits_judge.pth")
    return all(f.is_dir() for f in folders) and all(w.is_file() for w in weights)


def prepare_assets(
    cache: str | Path | None = None, *, console: Console | None = None
) -> DemoAssets:
    """Write the digit folders and train both networks once; later calls reuse the cache.

    Each piece is written under a temporary name and renamed when complete, so
    an interrupted run never leaves a half-written asset that looks finished.
    """
    root = cache_dir(cache)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ActstatsError(f"cache {root}: cannot create it ({exc}); pass --cache DIR") from None
    say = (console or Console(quiet=True)).print
    train, holdout = root / "digits-train", root / "digits-holdout"
    for folder, is_holdout in ((train, False), (holdout, True)):
        if not folder.is_dir():
            say(f"writing scikit-learn digits to {folder}")
            tmp = folder.with_name(folder.name + ".tmp")
            write_digit_folders(tmp, holdout=is_holdout)
            tmp.rename(folder)
    accuracy = _read_json(root / "accuracy.json")
    for name, factory, seed, epochs in (
        ("digits_vgg", digits_vgg, 0, 30),
        ("digits_judge", digits_judge, 1, 12),
    ):
        path = root / f"{name}.pth"
        if path.is_file():
            continue
        say(f"training {name} on {train} (once; cached)")
        start = time.perf_counter()
        module = factory()
        acc = train_classifier(module, *load_digit_folder_tensors(train), seed=seed, epochs=epochs)
        torch.save(module.state_dict(), path.with_suffix(".tmp"))
        path.with_suffix(".tmp").rename(path)
        accuracy[name] = acc
        say(f"  {name}: training accuracy {acc:.3f} in {time.perf_counter() - start:.0f} s")
    (root / "accuracy.json").write_text(json.dumps(accuracy))
    return DemoAssets(train, holdout, root / "digits_vgg.pth", root / "digits_judge.pth", accuracy)


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def _load_uint8(folder: Path) -> np.ndarray:
    """Every PNG in ``folder`` as (n, H, W, 3) uint8, in name order."""
    paths = sorted(folder.glob("*.png"))
    if not paths:
        raise ActstatsError(f"{folder}: no PNG images")
    return np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths])


def measure_realism(
    network: Network,
    judge: Network,
    assets: DemoAssets,
    samples: dict[str, dict[str, np.ndarray]],
    *,
    n_real: int,
    seed: int = 0,
) -> dict[str, Any]:
    """Realism of ``samples[class][method]`` (uint8 images), plus real images as a floor.

    The ``real`` row is ``n_real`` random fitting-half images per class, measured
    exactly like the samples (same n, so the Fréchet bias of few samples matches).
    Returns ``{"classes": {class: {method: metrics}}, "summary": ..., "definitions": ...}``.
    """
    rng = np.random.default_rng(seed)
    per_class: dict[str, dict[str, Any]] = {}
    for cls, by_method in samples.items():
        fit_images = _load_uint8(assets.train_root / cls)
        ref = realism.build_reference(
            network,
            judge,
            DIGIT_NAMES.index(cls),
            fit_images,
            _load_uint8(assets.holdout_root / cls),
        )
        real = fit_images[rng.choice(len(fit_images), size=n_real, replace=False)]
        per_class[cls] = {
            m: realism.measure_images(imgs, ref, network, judge) for m, imgs in by_method.items()
        }
        per_class[cls]["real"] = realism.measure_images(real, ref, network, judge)
    return {
        "classes": per_class,
        "summary": realism.summarize(per_class),
        "definitions": realism.DEFINITIONS,
    }


def ink_box(rgb: np.ndarray, threshold: int = 128) -> tuple[int, int, int, int]:
    """Half-open ``(x0, y0, x1, y1)`` box of the pixels brighter than ``threshold`` (the ink)."""
    ys, xs = np.nonzero(np.asarray(rgb).mean(axis=-1) >= threshold)
    if not len(xs):
        h, w = rgb.shape[:2]
        return (0, 0, w, h)
    return (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)


def box_iou(a: Sequence[int], b: Sequence[int]) -> float:
    """Intersection over union of two half-open ``(x0, y0, x1, y1)`` boxes."""
    iw = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def _save_big(rgb: np.ndarray, path: Path, scale: int = 4) -> Image.Image:
    img = Image.fromarray(rgb).resize(
        (rgb.shape[1] * scale, rgb.shape[0] * scale), Image.Resampling.NEAREST
    )
    img.save(path)
    return img


def _saliency_overlay(
    rgb: np.ndarray, sal: np.ndarray, box: Sequence[int], ink: Sequence[int], path: Path
) -> None:
    """The digit with the saliency in red, the localization box (lime) and the ink box (cyan)."""
    from PIL import ImageDraw

    heat = sal / max(float(sal.max()), 1e-12)
    base = rgb.astype(np.float64) * 0.5
    base[..., 0] = np.maximum(base[..., 0], 255.0 * heat)
    scale = 4
    img = Image.fromarray(base.clip(0, 255).astype(np.uint8)).resize(
        (rgb.shape[1] * scale, rgb.shape[0] * scale), Image.Resampling.NEAREST
    )
    draw = ImageDraw.Draw(img)
    for (x0, y0, x1, y1), colour in ((ink, (0, 200, 255)), (box, (0, 255, 0))):
        draw.rectangle((x0 * scale, y0 * scale, x1 * scale - 1, y1 * scale - 1), outline=colour)
    img.save(path)


def explain_digits(
    network: Network,
    models_path: Path,
    assets: DemoAssets,
    out: Path,
    config: DemoConfig,
    *,
    quick: bool = False,
) -> dict[str, Any]:
    """Saliency, localization, inversion (with and without the prior) and a dream on 2 held-out
    digits; PNGs under ``out/explain/``, numbers in ``out/explain.json`` (returned)."""
    from actstats.explain import load_input
    from actstats.layers import parse_neuron
    from actstats.localize import localize
    from actstats.models import load
    from actstats.saliency import saliency_map
    from actstats.sample import class_stats
    from actstats.synth.dream import DreamConfig, activation_energy, dream
    from actstats.synth.invert import InvertConfig, activation_error, invert

    fitted = load(models_path)
    layer = DEMO_EXPLAIN_LAYER
    inv_config = InvertConfig(steps=20 if quick else 80, seed=config.seed)
    dream_config = DreamConfig(octaves=2, steps=4 if quick else 10, seed=config.seed)
    classes = [c for c in config.classes if c in fitted.classes]
    picks = [(classes[i % len(classes)], i // len(classes)) for i in range(2)]
    root = out / "explain"
    digits = []
    for cls, k in picks:
        image = sorted((assets.holdout_root / cls).glob("*.png"))[k]
        folder = root / f"{cls}_{image.stem}"
        folder.mkdir(parents=True, exist_ok=True)
        inputs = load_input(network, image)
        rgb = network.preprocessing.to_uint8(inputs)[0]
        neuron = network.resolve_neuron(parse_neuron(f"fc8:{DIGIT_NAMES.index(cls)}"))
        sal = saliency_map(network, inputs, neuron)[0].numpy()
        loc = localize(rgb.astype(np.float64) / 255.0, sal)
        ink = ink_box(rgb)
        _save_big(rgb, folder / "input.png")
        _saliency_overlay(rgb, sal, loc.box, ink, folder / "saliency.png")
        with torch.inference_mode():
            target = network.activations(inputs.to(network.device), [layer])[layer]
        inversion = {}
        for name, stats in (("inverted", None), ("inverted_prior", class_stats(fitted, cls))):
            result = invert(network, inputs, layer, stats=stats, config=inv_config)
            _save_big(network.preprocessing.to_uint8(result.images)[0], folder / f"{name}.png")
            inversion[name] = {
                "relative_error": float(activation_error(network, result.images, layer, target)[0]),
                "prior_layers": result.prior_layers,
            }
        dreamed = dream(network, inputs, layer, config=dream_config)
        _save_big(network.preprocessing.to_uint8(dreamed.images)[0], folder / "dream.png")
        digits.append(
            {
                "class": cls,
                "image": os.path.relpath(image, out),
                "neuron": str(neuron),
                "files": {
                    n: os.path.relpath(folder / f"{n}.png", out)
                    for n in ("input", "saliency", "inverted", "inverted_prior", "dream")
                },
                "localize": {
                    "box": list(loc.box),
                    "ink_box": list(ink),
                    "iou_ink": box_iou(loc.box, ink),
                },
                "invert": {"layer": layer, **inversion},
                "dream": {
                    "layer": layer,
                    "energy_before": float(activation_energy(network, inputs, layer)[0]),
                    "energy_after": float(activation_energy(network, dreamed.images, layer)[0]),
                },
            }
        )
    record = {
        "invert_config": asdict(inv_config),
        "dream_config": asdict(dream_config),
        "digits": digits,
    }
    (out / "explain.json").write_text(json.dumps(record, indent=1))
    return record


@contextmanager
def _stage(console: Console, number: int, total: int, text: str) -> Iterator[None]:
    console.rule(f"[bold]{number}/{total}[/] {text}", align="left")
    start = time.perf_counter()
    yield
    console.print(f"[dim]{text}: {time.perf_counter() - start:.1f} s[/]")


def _sample_all(
    models_path: Path, out: Path, config: DemoConfig, console: Console, progress: bool
) -> dict[str, dict[str, np.ndarray]]:
    """Run ``actstats sample``'s library call per method, for every class's output unit."""
    neurons = [f"fc8:{DIGIT_NAMES.index(c)}" for c in config.classes]
    images: dict[str, dict[str, np.ndarray]] = {c: {} for c in config.classes}
    with Progress(
        TextColumn("{task.description:<10}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.3g}"),
        TimeElapsedColumn(),
        console=console,
        disable=not progress,
    ) as bar:
        runs = [(m, m, {}) for m in config.methods] + [
            (label, recipe, dict(overrides)) for label, recipe, overrides in config.variants
        ]
        tasks = {label: bar.add_task(label, total=1, loss=float("nan")) for label, _, _ in runs}
        for label, method, overrides in runs:
            task = tasks[label]

            def advance(step: int, total: int, loss: float, task: Any = task) -> None:
                bar.update(task, completed=step, total=total, loss=loss)

            folders = run_sample(
                models_path,
                neurons,
                method,
                config.n,
                config.seed,
                out / "samples" / label,
                device="cpu",
                steps=config.steps,
                progress=advance,
                overrides=overrides,
            )
            for folder in folders:
                meta = json.loads((folder / "samples.json").read_text())
                if label != method:  # an ablation: name it, keep the recipe it ran
                    meta.update(method=label, recipe=method, overrides=overrides)
                    (folder / "samples.json").write_text(json.dumps(meta, indent=1))
                files = [folder / r["file"] for r in meta["samples"]]
                images[meta["class"]][label] = np.stack(
                    [np.asarray(Image.open(p).convert("RGB")) for p in files]
                )
    return images


def run_demo(
    out: str | Path = "demo-run",
    *,
    cache: str | Path | None = None,
    quick: bool = False,
    config: DemoConfig | None = None,
    console: Console | None = None,
    progress: bool = True,
) -> Path:
    """Run the demo into ``out`` and return the path of its ``report.html``.

    ``quick`` samples three classes with few steps (the test suite's run);
    ``config`` overrides both. Everything runs on the CPU.
    """
    config = config or (DemoConfig.quick() if quick else DemoConfig())
    _check_methods(config.methods, config.variants)
    unknown = [c for c in config.classes if c not in DIGIT_NAMES]
    if unknown or not config.classes:
        raise ActstatsError(f"demo classes {unknown or '()'}: choose from {', '.join(DIGIT_NAMES)}")
    console = console or Console()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    total = 7 if config.explain else 6
    started = time.perf_counter()
    cached = _assets_cached(cache)
    title = "digits and networks (cached)" if cached else "digits and networks (training once)"
    with _stage(console, 1, total, title):
        assets = prepare_assets(cache, console=console)
    with _stage(console, 2, total, "collect activations"):
        network = load_network(NET_FACTORY, str(assets.weights), device="cpu")
        collect(
            assets.train_root,
            out / "acts.zarr",
            model=NET_FACTORY,
            weights=str(assets.weights),
            layers=list(DEMO_LAYERS),
            reduce=dict(DEMO_REDUCE),
            classes=list(config.classes),
            device="cpu",
            overwrite=True,
            progress=progress,
            network=network,
        )
    with _stage(console, 3, total, "fit class statistics"):
        fit_store(
            out / "acts.zarr", out / "models", overwrite=True, seed=config.seed, progress=progress
        )
    with _stage(
        console, 4, total, f"sample {len(config.classes)} classes x {', '.join(config.methods)}"
    ):
        samples = _sample_all(out / "models", out, config, console, progress)
    with _stage(console, 5, total, "measure realism (judge network, held-out digits)"):
        judge = load_network(JUDGE_FACTORY, str(assets.judge_weights), device="cpu")
        measured = measure_realism(
            network, judge, assets, samples, n_real=config.n, seed=config.seed
        )
        (out / "realism.json").write_text(json.dumps(measured, indent=1))
    if config.explain:
        with _stage(console, 6, total, "saliency, localization, inversion, dream (2 digits)"):
            explain_digits(network, out / "models", assets, out, config, quick=quick)
    else:
        (out / "explain.json").unlink(missing_ok=True)
    with _stage(console, total, total, "report"):
        (out / "run.json").write_text(
            json.dumps(
                {
                    "description": "actstats demo: scikit-learn digits, the VGG-shaped digits "
                    "network; samples for each class's output unit (fc8) by every method.",
                    "real_root": os.path.relpath(assets.train_root, out),
                    "holdout_root": os.path.relpath(assets.holdout_root, out),
                    "config": asdict(config),
                    "assets": {k: str(v) for k, v in asdict(assets).items()},
                },
                indent=1,
            )
        )
        report = write_report(out, title="actstats demo: digits")
    console.print(f"done in {time.perf_counter() - started:.0f} s; report: [bold]{report}[/]")
    return report


def _check_methods(methods: Sequence[str], variants: Sequence[tuple] = ()) -> None:
    bad = [m for m in [*methods, *(v[1] for v in variants)] if m not in METHODS]
    if bad:
        raise ActstatsError(f"demo methods {bad}: choose from {', '.join(METHODS)}")
