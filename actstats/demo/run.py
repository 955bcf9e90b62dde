"""``actstats demo``: the whole pipeline on scikit-learn's digits, on a CPU, in minutes.

Nothing is downloaded. The first run writes the digits as class folders (three
splits: fit, validation, test; :data:`actstats.demo.digits.SPLITS`) and trains the
VGG-shaped digits network and the judge network, seeded, under a cache directory (``--cache``, else
``$ACTSTATS_CACHE``, else ``~/.cache/actstats``; in ``demo-v1/``). Then it runs
the same library calls as ``actstats collect``, ``actstats fit`` and
``actstats sample`` (for every class's output unit, with every method), measures
realism (:mod:`actstats.eval.realism`) and writes the report (:mod:`actstats.io.report`).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from PIL import Image

from actstats.demo.digits import (
    DIGIT_NAMES,
    DIGITS_JUDGE_LAYERS,
    DIGITS_NET_LAYERS,
    digits_judge,
    digits_vgg,
    load_digit_folder_tensors,
    train_classifier,
    write_digit_folders,
)
from actstats.errors import ActstatsError
from actstats.eval import realism
from actstats.io.artifacts import read_samples
from actstats.io.locks import writer_lock
from actstats.io.paths import write_atomic
from actstats.net.network import Network, load_network
from actstats.pipeline.collect import collect
from actstats.pipeline.explain import run_dream, run_invert, run_localize, run_saliency
from actstats.pipeline.fit import fit_store
from actstats.pipeline.report import run_report
from actstats.pipeline.sample import run_sample
from actstats.pipeline.train_generator import run_train_generator
from actstats.synth.generator_train import GeneratorTrainingConfig
from actstats.synth.methods import METHODS
from actstats.synth.methods.dream import DreamConfig
from actstats.synth.methods.invert import InvertConfig
from actstats.synth.render import Progress

__all__ = [
    "DEMO_EXPLAIN_LAYER",
    "DEMO_GENERATOR_LAYER",
    "DEMO_LAYERS",
    "DEMO_REDUCE",
    "QUIET",
    "DemoAssets",
    "DemoConfig",
    "DemoReporter",
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
#: The layer the ``generator`` method's decoder inverts (DGN-AM's fc6).
DEMO_GENERATOR_LAYER = "fc6"
NET_FACTORY = "actstats.demo.digits:digits_vgg"
JUDGE_FACTORY = "actstats.demo.digits:digits_judge"
_CACHE_VERSION = "demo-v1"
#: Cache folder of each digits split.
_SPLIT_FOLDERS = {"fit": "digits-train", "validation": "digits-validation", "test": "digits-test"}


class DemoReporter(Protocol):
    """How the demo tells a person what it does (the CLI draws it; the library never prints).

    ``stage`` wraps each numbered stage, ``say`` reports a line, and ``steps(label)``
    yields the progress callback of one sampling run (``progress(step, total, loss)``).
    """

    def stage(self, number: int, total: int, text: str) -> contextlib.AbstractContextManager:
        """Enter and leave stage ``number`` of ``total``."""
        ...

    def say(self, text: str) -> None:
        """One line of news (training, cache, the report's path)."""
        ...

    def steps(self, label: str) -> contextlib.AbstractContextManager[Progress]:
        """The step callback of one sampling run labelled ``label``."""
        ...


class _Quiet:
    """Reports nothing (the library default)."""

    def stage(self, number: int, total: int, text: str) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()

    def say(self, text: str) -> None:
        return None

    @contextlib.contextmanager
    def steps(self, label: str) -> Iterator[Progress]:
        yield lambda step, total, loss: None


#: The silent reporter.
QUIET: DemoReporter = _Quiet()


@dataclass(frozen=True)
class DemoConfig:
    """What the demo samples: which classes, methods, how many images, how many steps."""

    classes: tuple[str, ...] = DIGIT_NAMES
    methods: tuple[str, ...] = tuple(METHODS)
    n: int = 4
    steps: int | None = None  # None: each method's default
    seed: int = 0
    #: Extra sample sets outside the library's methods, for ablations:
    #: ``(label, method, ((config field, value), ...))``; each is sampled with
    #: ``recipe``'s defaults plus the overrides and recorded as method ``label``.
    variants: tuple[tuple[str, str, tuple[tuple[str, Any], ...]], ...] = ()
    #: Run the single-image tools (saliency, localization, inversion, dream) on held-out digits.
    explain: bool = True
    #: Epochs of the ``generator`` method's decoder (trained on the run's store, fc6).
    generator_epochs: int = 10
    #: The split realism is measured on: ``test`` for reported numbers, ``validation``
    #: while choosing defaults (the fit split trained the networks and the statistics).
    split: str = "test"

    @classmethod
    def quick(cls) -> DemoConfig:
        """Three classes, three samples, few steps: the smoke test of the whole path."""
        return cls(classes=("zero", "one", "seven"), n=3, steps=40, generator_epochs=2)

    def needs_generator(self) -> bool:
        """Whether a method or variant decodes with the trained generator."""
        return "generator" in self.methods or any(v[1] == "generator" for v in self.variants)


@dataclass(frozen=True)
class DemoAssets:
    """The cached inputs: real class folders (fit, validation, test splits) and weights."""

    train_root: Path
    validation_root: Path
    test_root: Path
    weights: Path
    judge_weights: Path
    accuracy: dict[str, float] = field(default_factory=dict)

    def split_root(self, split: str) -> Path:
        """The class folders of ``split`` (``fit``, ``validation`` or ``test``)."""
        roots = {"fit": self.train_root, "validation": self.validation_root}
        roots["test"] = self.test_root
        if split not in roots:
            raise ActstatsError(f"split {split!r}: use one of {', '.join(roots)}")
        return roots[split]


def cache_dir(cache: str | Path | None = None) -> Path:
    """``cache``, else ``$ACTSTATS_CACHE``, else ``~/.cache/actstats``; plus ``demo-v1``."""
    base = cache or os.environ.get("ACTSTATS_CACHE") or Path.home() / ".cache" / "actstats"
    return Path(base).expanduser() / _CACHE_VERSION


def _assets_cached(cache: str | Path | None = None) -> bool:
    """Whether :func:`prepare_assets` will only read the cache (nothing to write or train)."""
    root = cache_dir(cache)
    folders = tuple(root / f for f in _SPLIT_FOLDERS.values())
    weights = (root / "digits_vgg.pth", root / "digits_judge.pth")
    return all(f.is_dir() for f in folders) and all(w.is_file() for w in weights)


def prepare_assets(
    cache: str | Path | None = None, *, say: Callable[[str], None] = QUIET.say
) -> DemoAssets:
    """Write the digit folders and train both networks once; later calls reuse the cache.

    Each piece is written under a temporary name and renamed when complete, so
    an interrupted run never leaves a half-written asset that looks finished; runs
    started together (the realism benchmark's ``--jobs``) wait for the cache's lock
    and find the pieces the first one wrote.
    """
    root = cache_dir(cache)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ActstatsError(f"cache {root}: cannot create it ({exc}); pass --cache DIR") from None
    with writer_lock(root, "demo cache", wait=True):
        return _prepare_locked(root, say)


def _prepare_locked(root: Path, say: Callable[[str], None]) -> DemoAssets:
    for split, name in _SPLIT_FOLDERS.items():
        folder = root / name
        if not folder.is_dir():
            say(f"writing scikit-learn digits ({split} split) to {folder}")
            tmp = folder.with_name(folder.name + ".tmp")
            write_digit_folders(tmp, split=split)
            tmp.rename(folder)
    train = root / _SPLIT_FOLDERS["fit"]
    accuracy = _read_json(root / "accuracy.json")
    trained = False
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
        trained = True
        say(f"  {name}: training accuracy {acc:.3f} in {time.perf_counter() - start:.0f} s")
    if trained:  # atomically, and only when it changed: parallel runs read it
        write_atomic(root / "accuracy.json", json.dumps(accuracy))
    return DemoAssets(
        train,
        root / _SPLIT_FOLDERS["validation"],
        root / _SPLIT_FOLDERS["test"],
        root / "digits_vgg.pth",
        root / "digits_judge.pth",
        accuracy,
    )


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
    split: str = "test",
) -> dict[str, Any]:
    """Realism of ``samples[class][method]`` (uint8 images), plus real images as a floor.

    Everything is measured on ``split`` (never the fit split the networks and statistics
    learned from): per class, ``n_real`` random images of the split are the ``real`` row,
    measured exactly like the samples (same n, so the Fréchet bias of few samples
    matches), and the split's other images are the reference (Fréchet statistics, pixel
    Gaussian), so the real row is out of sample too. The pixel NLL ratio's denominator is
    the fit split's NLL under that Gaussian: the same for every row.
    Returns ``{"classes": {class: {method: metrics}}, "summary": ..., "definitions": ...}``.
    """
    rng = np.random.default_rng(seed)
    per_class: dict[str, dict[str, Any]] = {}
    for cls, by_method in samples.items():
        evaluation = _load_uint8(assets.split_root(split) / cls)
        order = rng.permutation(len(evaluation))
        real, reference = evaluation[order[:n_real]], evaluation[order[n_real:]]
        ref = realism.build_reference(
            network,
            judge,
            DIGIT_NAMES.index(cls),
            _load_uint8(assets.train_root / cls),
            reference,
            net_layers=DIGITS_NET_LAYERS,
            judge_layers=DIGITS_JUDGE_LAYERS,
        )
        per_class[cls] = {
            m: realism.measure_images(imgs, ref, network, judge) for m, imgs in by_method.items()
        }
        per_class[cls]["real"] = realism.measure_images(real, ref, network, judge)
        for measured in per_class[cls].values():  # reference rows -> the split's file order
            if "nearest_holdout" in measured:
                measured["nearest_holdout"] = [
                    int(order[n_real + j]) for j in measured["nearest_holdout"]
                ]
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


def explain_digits(
    models_path: Path,
    assets: DemoAssets,
    out: Path,
    config: DemoConfig,
    *,
    quick: bool = False,
) -> dict[str, Any]:
    """Saliency, localization, inversion (with and without the prior) and a dream on 2
    held-out digits, by the pipeline calls behind ``actstats saliency | localize | invert |
    dream``; their files under ``out/explain/``, the numbers in ``out/explain.json``."""
    layer = DEMO_EXPLAIN_LAYER
    inv_config = InvertConfig(steps=20 if quick else 80, seed=config.seed)
    dream_config = DreamConfig(octaves=2, steps=4 if quick else 10, seed=config.seed)
    picks = [(config.classes[i % len(config.classes)], i // len(config.classes)) for i in range(2)]
    # the demo's own factory, trusted by name: a model file's factory is never imported
    fitted = {"fitted": models_path, "network": NET_FACTORY, "device": "cpu"}
    net = {"network": NET_FACTORY, "weights": str(assets.weights), "device": "cpu"}
    digits = []
    for cls, k in picks:
        image = sorted((assets.test_root / cls).glob("*.png"))[k]
        folder = out / "explain" / f"{cls}_{image.stem}"
        neuron = f"fc8:{DIGIT_NAMES.index(cls)}"
        saliency_png, _ = run_saliency(image, neuron, folder / "saliency.png", **net)
        located = run_localize(image, neuron, folder / "localize", **net)
        inverted = run_invert(
            image, layer, folder / "invert", class_name=cls, config=inv_config, **fitted
        )
        dreamed = run_dream(image, layer, folder / "dream", config=dream_config, **net)
        located_json = json.loads((located / "box.json").read_text())
        box = [located_json["box"][k] for k in ("x0", "y0", "x1", "y1")]
        inv = json.loads((inverted / "invert.json").read_text())
        drm = json.loads((dreamed / "dream.json").read_text())
        ink = ink_box(np.asarray(Image.open(inverted / "input.png").convert("RGB")))
        files = {
            "input": inverted / "input.png",
            "saliency": saliency_png,
            "localize": located / "overlay.png",
            "inverted": inverted / "inverted.png",
            "inverted_prior": inverted / "inverted_prior.png",
            "dream": dreamed / "dream.png",
        }
        digits.append(
            {
                "class": cls,
                "image": os.path.relpath(image, out),
                "neuron": located_json["neuron"],
                "files": {name: os.path.relpath(f, out) for name, f in files.items()},
                "localize": {
                    "box": box,
                    "ink_box": list(ink),
                    "iou_ink": box_iou(box, ink),
                },
                "invert": {
                    "layer": layer,
                    **{v: inv[v] for v in ("inverted", "inverted_prior")},
                },
                "dream": {
                    "layer": layer,
                    "energy_before": drm["energy_before"],
                    "energy_after": drm["dream"]["energy"],
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


def _sample_all(
    models_path: Path, out: Path, config: DemoConfig, reporter: DemoReporter
) -> dict[str, dict[str, np.ndarray]]:
    """Run ``actstats sample``'s library call per method, for every class's output unit."""
    neurons = [f"fc8:{DIGIT_NAMES.index(c)}" for c in config.classes]
    images: dict[str, dict[str, np.ndarray]] = {c: {} for c in config.classes}
    runs = [(m, m, {}) for m in config.methods] + [
        (label, method, dict(overrides)) for label, method, overrides in config.variants
    ]
    for label, method, overrides in runs:
        with reporter.steps(label) as progress:
            folders = run_sample(
                models_path,
                neurons,
                method,
                config.n,
                config.seed,
                out / "samples" / label,
                network=NET_FACTORY,  # the demo's own factory: trusted by name, not by the file
                device="cpu",
                steps=config.steps,
                progress=progress,
                overrides=overrides,
                label=label,
                generator=out / "generator" if method == "generator" else None,
            )
        for folder in folders:
            meta, pixels = read_samples(folder)
            images[meta["class"]][label] = pixels
    return images


def _train_generator(
    out: Path, network: Network, config: DemoConfig, reporter: DemoReporter
) -> None:
    """``actstats train-generator`` on the run's store: the decoder ``--method generator`` uses."""
    with reporter.steps("train-generator") as progress:
        run_train_generator(
            out / "acts.zarr",
            DEMO_GENERATOR_LAYER,
            out / "generator",
            # a decoder sized for 32x32 digits (the defaults suit 224 px networks)
            config=GeneratorTrainingConfig(
                layer=DEMO_GENERATOR_LAYER,
                epochs=config.generator_epochs,
                batch_size=32,
                width=16,
                hidden=128,
                seed=config.seed,
            ),
            network=network,
            overwrite=True,
            progress=progress,
        )


def run_demo(
    out: str | Path = "demo-run",
    *,
    cache: str | Path | None = None,
    quick: bool = False,
    config: DemoConfig | None = None,
    reporter: DemoReporter = QUIET,
) -> Path:
    """Run the demo into ``out`` and return the path of its ``report.html``.

    ``quick`` samples three classes with few steps (the test suite's run);
    ``config`` overrides both. Everything runs on the CPU. ``reporter`` is told
    what happens (the CLI draws it).
    """
    config = config or (DemoConfig.quick() if quick else DemoConfig())
    _check_methods(config.methods, config.variants)
    unknown = [c for c in config.classes if c not in DIGIT_NAMES]
    if unknown or not config.classes:
        raise ActstatsError(f"demo classes {unknown or '()'}: choose from {', '.join(DIGIT_NAMES)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    total = 6 + int(config.explain) + int(config.needs_generator())
    started = time.perf_counter()
    cached = _assets_cached(cache)
    title = "digits and networks (cached)" if cached else "digits and networks (training once)"
    with reporter.stage(1, total, title):
        assets = prepare_assets(cache, say=reporter.say)
    with reporter.stage(2, total, "collect activations"):
        network = load_network(NET_FACTORY, str(assets.weights), device="cpu")
        collect(
            assets.train_root,
            out / "acts.zarr",
            network=network,
            layers=list(DEMO_LAYERS),
            reduce=dict(DEMO_REDUCE),
            classes=list(config.classes),
            overwrite=True,
        )
        collect(  # held-out digits: the report's reference NLL of real images
            assets.validation_root,
            out / "holdout.zarr",
            network=network,
            layers=list(DEMO_LAYERS),
            reduce=dict(DEMO_REDUCE),
            classes=list(config.classes),
            overwrite=True,
        )
    with reporter.stage(3, total, "fit class statistics"):
        fit_store(out / "acts.zarr", out / "models", overwrite=True, seed=config.seed)
    stage = 4
    if config.needs_generator():
        with reporter.stage(
            stage, total, f"train the generator ({DEMO_GENERATOR_LAYER} -> pixels)"
        ):
            _train_generator(out, network, config, reporter)
        stage += 1
    methods = ", ".join(config.methods)
    with reporter.stage(stage, total, f"sample {len(config.classes)} classes x {methods}"):
        samples = _sample_all(out / "models", out, config, reporter)
    with reporter.stage(stage + 1, total, "measure realism (judge network, held-out digits)"):
        judge = load_network(JUDGE_FACTORY, str(assets.judge_weights), device="cpu")
        measured = measure_realism(
            network, judge, assets, samples, n_real=config.n, seed=config.seed, split=config.split
        )
        (out / "realism.json").write_text(json.dumps(measured, indent=1))
    if config.explain:
        with reporter.stage(
            stage + 2, total, "saliency, localization, inversion, dream (2 digits)"
        ):
            explain_digits(out / "models", assets, out, config, quick=quick)
    else:
        (out / "explain.json").unlink(missing_ok=True)
    with reporter.stage(total, total, "report"):
        (out / "run.json").write_text(
            json.dumps(
                {
                    "description": "actstats demo: scikit-learn digits, the VGG-shaped digits "
                    "network; samples for each class's output unit (fc8) by every method.",
                    "real_root": os.path.relpath(assets.split_root(config.split), out),
                    "fit_root": os.path.relpath(assets.train_root, out),
                    "holdout_root": os.path.relpath(assets.validation_root, out),
                    "store": "acts.zarr",
                    "models": "models",
                    "holdout_store": "holdout.zarr",
                    "config": asdict(config),
                    "assets": {k: str(v) for k, v in asdict(assets).items()},
                },
                indent=1,
            )
        )
        report = run_report(out, title="actstats demo: digits")
    reporter.say(f"done in {time.perf_counter() - started:.0f} s; report: {report}")
    return report


def _check_methods(methods: Sequence[str], variants: Sequence[tuple] = ()) -> None:
    bad = [m for m in [*methods, *(v[1] for v in variants)] if m not in METHODS]
    if bad:
        raise ActstatsError(f"demo methods {bad}: choose from {', '.join(METHODS)}")
