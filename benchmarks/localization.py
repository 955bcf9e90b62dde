"""Localization benchmark: digits pasted onto natural photographs, boxed from saliency.

The digits network's saliency map for the digit's class seeds the GraphCut localizer
(:func:`actstats.localize.localize`) on scenes where the answer is not the whole frame:
each test-split digit is pasted as ink at a random scale (45-75 % of the side) and
position onto a random, darkened crop of one of scikit-image's photographs
(:func:`actstats.digits.digit_scenes`). The box is judged by its IoU with the ink's box,
beside two baselines measured on the same scenes: the **whole frame**, and a
**centre box** of the scenes' mean ink-box size (it knows the answer's size, not where).

Four localizers, each a step of the way: the **saliency GraphCut** on the whole frame
(Simonyan et al.'s recipe, :func:`actstats.explain.localize.localize`); the **best window**
(the square crop the network classifies best, the GraphCut seeded by that crop's
saliency inside it); the **top-10 windows** (the ten best crops' saliency maps, weighted
by their class probability); and :func:`actstats.explain.search.localize_by_search` as
it ships: the **top-20 windows' input x gradient** (instead of |gradient|), seeds at its
top 5 %. Goal, for the last: mean IoU >= 0.7 and above both baselines.

Protocol: settings (how many windows, which map, seed quantiles) are chosen on the
validation split's digits (``--split validation``, scenes seed 1) and reported on the test
split's (scenes seed 0); neither was used to train the network.

Usage: ``python benchmarks/localization.py [--label cpu] [--split test] [--per-class 10]
[--seed 0] [--smoothgrad 0] [--cache DIR]``. Writes
``benchmarks/results/localization-<label>.{json,md}`` and a picture of the first scenes
(ink box green, found box red).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from actstats.demo.digits import DIGIT_NAMES, digit_scenes
from actstats.demo.run import NET_FACTORY, box_iou, prepare_assets
from actstats.eval.realism import to_inputs
from actstats.explain.localize import localize
from actstats.explain.saliency import saliency_map
from actstats.explain.search import localize_by_search
from actstats.net.names import parse_neuron
from actstats.net.network import Network, load_network

RESULTS = Path(__file__).resolve().parent / "results"
#: The localizer the goal is judged on: localize_by_search's defaults.
LOCALIZER = "top-20 windows, input x gradient + GraphCut"
#: Window-search localizers: their options of localize_by_search.
SEARCHES: dict[str, dict[str, Any]] = {
    "best window + GraphCut": {"windows": 1, "kind": "gradient", "foreground": 0.9},
    "top-10 windows + GraphCut": {"windows": 10, "kind": "gradient", "foreground": 0.9},
    LOCALIZER: {},
}


def load_test_digits(root: Path, per_class: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``per_class`` digits of each class folder as uint8 RGB, with labels."""
    images, labels = [], []
    for label, name in enumerate(DIGIT_NAMES):
        for path in sorted((root / name).glob("*.png"))[:per_class]:
            images.append(np.asarray(Image.open(path).convert("RGB")))
            labels.append(label)
    return np.stack(images), np.array(labels)


def centre_box(size: int, boxes: np.ndarray) -> tuple[int, int, int, int]:
    """A box of the mean ink-box width and height, centred in the frame."""
    w, h = np.mean(boxes[:, 2] - boxes[:, 0]), np.mean(boxes[:, 3] - boxes[:, 1])
    x0, y0 = round((size - w) / 2), round((size - h) / 2)
    return (x0, y0, x0 + round(w), y0 + round(h))


def localize_scenes(
    network: Network, scenes: np.ndarray, labels: np.ndarray, *, smoothgrad: int = 0
) -> dict[str, np.ndarray]:
    """Boxes (x0, y0, x1, y1) for every scene by each localizer: the saliency GraphCut on
    the whole frame, and the window searches (:data:`SEARCHES`)."""
    found: dict[str, list] = {"saliency GraphCut": [], **{k: [] for k in SEARCHES}}
    for scene, label in zip(scenes, labels, strict=True):
        x = to_inputs(network, scene[None])
        rgb = scene.astype(np.float64) / 255.0
        neuron = network.resolve_neuron(parse_neuron(f"fc8:{label}"))
        sal = saliency_map(network, x, neuron, smoothgrad=smoothgrad)[0].numpy()
        found["saliency GraphCut"].append(localize(rgb, sal).box)
        for name, options in SEARCHES.items():
            box = localize_by_search(
                network, x, rgb, neuron, smoothgrad=smoothgrad, stride=2, **options
            ).box
            found[name].append(box)
    return {k: np.array(v) for k, v in found.items()}


def evaluate(
    network: Network, scenes: np.ndarray, labels: np.ndarray, boxes: np.ndarray, **kwargs: Any
) -> dict[str, Any]:
    """Mean IoU of every localizer, the whole frame and the centre box on the same scenes."""
    size = scenes.shape[1]
    found = localize_scenes(network, scenes, labels, **kwargs)
    centre = centre_box(size, boxes)
    ious = {k: [box_iou(f, b) for f, b in zip(v, boxes, strict=True)] for k, v in found.items()}
    ious["whole frame"] = [box_iou((0, 0, size, size), b) for b in boxes]
    ious["centre box"] = [box_iou(centre, b) for b in boxes]
    return {
        "mean_iou": {k: float(np.mean(v)) for k, v in ious.items()},
        "iou": {k: [float(x) for x in v] for k, v in ious.items()},
        "found": {k: v.tolist() for k, v in found.items()},
        "centre_box": list(centre),
    }


def picture(scenes: np.ndarray, boxes: np.ndarray, found: np.ndarray, path: Path, k: int = 12):
    """The first ``k`` scenes at 4x, ink box green, found box red."""
    tiles = []
    for scene, truth, got in zip(scenes[:k], boxes[:k], found[:k], strict=True):
        img = Image.fromarray(scene).resize((128, 128), Image.Resampling.NEAREST)
        draw = ImageDraw.Draw(img)
        draw.rectangle([4 * v - (i > 1) for i, v in enumerate(truth)], outline=(0, 255, 0))
        draw.rectangle([4 * v - (i > 1) for i, v in enumerate(got)], outline=(255, 0, 0))
        tiles.append(np.asarray(img))
    Image.fromarray(np.concatenate(tiles, axis=1)).save(path)


def main() -> None:
    """Build the scenes, localize, compare with the baselines, save."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", default="cpu")
    parser.add_argument("--split", choices=("validation", "test"), default="test")
    parser.add_argument("--per-class", type=int, default=10)
    parser.add_argument("--seed", type=int, default=None, help="scenes seed (0 test, 1 val)")
    parser.add_argument("--smoothgrad", type=int, default=0)
    parser.add_argument("--cache", default=None)
    args = parser.parse_args()
    assets = prepare_assets(args.cache)
    network = load_network(NET_FACTORY, str(assets.weights), device="cpu")
    digits, labels = load_test_digits(assets.split_root(args.split), args.per_class)
    seed = args.seed if args.seed is not None else {"test": 0, "validation": 1}[args.split]
    scenes, boxes = digit_scenes(digits, seed=seed)
    start = time.perf_counter()
    result = evaluate(network, scenes, labels, boxes, smoothgrad=args.smoothgrad)
    seconds = time.perf_counter() - start
    means = result["mean_iou"]
    best = means[LOCALIZER]
    met = best >= 0.7 and best > means["whole frame"] and best > means["centre box"]
    RESULTS.mkdir(parents=True, exist_ok=True)
    pic = RESULTS / f"localization-{args.label}.png"
    picture(scenes, boxes, np.array(result["found"][LOCALIZER]), pic)
    payload = {
        "label": args.label,
        "scenes": len(scenes),
        "split": args.split,
        "seed": seed,
        "smoothgrad": args.smoothgrad,
        "seconds": seconds,
        "machine": {"platform": platform.platform(), "processor": platform.processor()},
        "goal": "mean IoU >= 0.7 and above the whole-frame and centre-box baselines",
        "met": bool(met),
        **result,
    }
    (RESULTS / f"localization-{args.label}.json").write_text(json.dumps(payload, indent=1))
    rows = "\n".join(f"| {k} | {v:.3f} |" for k, v in means.items())
    text = (
        f"# Localization on digits pasted onto photographs ({args.label})\n\n"
        f"{len(scenes)} scenes ({args.split}-split digits, seed {seed}), "
        f"`python benchmarks/localization.py --label {args.label} --split {args.split}`, "
        f"{seconds:.0f} s.\n\n"
        f"| box | mean IoU with the ink box |\n|---|---|\n{rows}\n\n"
        f"Goal (mean IoU >= 0.7 and above both baselines): {'MET' if met else 'NOT MET'}.\n\n"
        f"![ink box green, {LOCALIZER} red]({pic.name})\n"
    )
    (RESULTS / f"localization-{args.label}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
