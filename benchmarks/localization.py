"""Localization benchmark: digits pasted onto natural photographs, boxed from saliency.

The digits network's saliency map for the digit's class seeds the GraphCut localizer
(:func:`actstats.localize.localize`) on scenes where the answer is not the whole frame:
each test-split digit is pasted as ink at a random scale (45-75 % of the side) and
position onto a random, darkened crop of one of scikit-image's photographs
(:func:`actstats.digits.digit_scenes`). The box is judged by its IoU with the ink's box,
beside two baselines measured on the same scenes: the **whole frame**, and a
**centre box** of the scenes' mean ink-box size (it knows the answer's size, not where).

Goal: mean IoU >= 0.7 and above both baselines.

Usage: ``python benchmarks/localization.py [--label cpu] [--per-class 10] [--seed 0]
[--smoothgrad 0] [--cache DIR]``. Writes ``benchmarks/results/localization-<label>.{json,md}``
and a picture of the first scenes (ink box green, found box red).
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
from actstats.net.names import parse_neuron
from actstats.net.network import Network, load_network

RESULTS = Path(__file__).resolve().parent / "results"


def test_digits(root: Path, per_class: int) -> tuple[np.ndarray, np.ndarray]:
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
) -> np.ndarray:
    """The localizer's box (x0, y0, x1, y1) for every scene, from its class's saliency."""
    found = []
    for scene, label in zip(scenes, labels, strict=True):
        x = to_inputs(network, scene[None])
        neuron = network.resolve_neuron(parse_neuron(f"fc8:{label}"))
        sal = saliency_map(network, x, neuron, smoothgrad=smoothgrad)[0].numpy()
        found.append(localize(scene.astype(np.float64) / 255.0, sal).box)
    return np.array(found)


def evaluate(
    network: Network, scenes: np.ndarray, labels: np.ndarray, boxes: np.ndarray, **kwargs: Any
) -> dict[str, Any]:
    """Mean IoU of the localizer, the whole frame and the centre box on the same scenes."""
    size = scenes.shape[1]
    found = localize_scenes(network, scenes, labels, **kwargs)
    centre = centre_box(size, boxes)
    ious = {
        "localizer": [box_iou(f, b) for f, b in zip(found, boxes, strict=True)],
        "whole frame": [box_iou((0, 0, size, size), b) for b in boxes],
        "centre box": [box_iou(centre, b) for b in boxes],
    }
    return {
        "mean_iou": {k: float(np.mean(v)) for k, v in ious.items()},
        "iou": {k: [float(x) for x in v] for k, v in ious.items()},
        "found": found.tolist(),
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
    parser.add_argument("--per-class", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoothgrad", type=int, default=0)
    parser.add_argument("--cache", default=None)
    args = parser.parse_args()
    assets = prepare_assets(args.cache)
    network = load_network(NET_FACTORY, str(assets.weights), device="cpu")
    digits, labels = test_digits(assets.test_root, args.per_class)
    scenes, boxes = digit_scenes(digits, seed=args.seed)
    start = time.perf_counter()
    result = evaluate(network, scenes, labels, boxes, smoothgrad=args.smoothgrad)
    seconds = time.perf_counter() - start
    means = result["mean_iou"]
    met = means["localizer"] >= 0.7 and all(
        means["localizer"] > v for v in means.values() if v != means["localizer"]
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    pic = RESULTS / f"localization-{args.label}.png"
    picture(scenes, boxes, np.array(result["found"]), pic)
    payload = {
        "label": args.label,
        "scenes": len(scenes),
        "seed": args.seed,
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
        f"{len(scenes)} scenes (test-split digits, seed {args.seed}), "
        f"`python benchmarks/localization.py --label {args.label}`, {seconds:.0f} s.\n\n"
        f"| box | mean IoU with the ink box |\n|---|---|\n{rows}\n\n"
        f"Goal (mean IoU >= 0.7 and above both baselines): {'MET' if met else 'NOT MET'}.\n\n"
        f"![ink box green, found box red]({pic.name})\n"
    )
    (RESULTS / f"localization-{args.label}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
