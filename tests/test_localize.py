"""GraphCut localization: exact on a synthetic object, overlapping the ink on the digits."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import actstats.cli
from actstats.demo.digits import DIGIT_NAMES, digit_scenes
from actstats.errors import ActstatsError
from actstats.explain.localize import localize, seed_masks
from actstats.explain.saliency import saliency_map
from actstats.net.names import parse_neuron
from actstats.net.network import Network
from actstats.pipeline.explain import load_input

sys.path.insert(0, str(Path(__file__).parent.parent / "benchmarks"))
from localization import LOCALIZER, evaluate, load_test_digits

runner = CliRunner()


def iou(a: tuple[int, ...], b: tuple[int, ...]) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_synthetic_object_is_boxed() -> None:
    rng = np.random.RandomState(0)
    image = 0.2 + 0.05 * rng.rand(48, 48, 3)
    image[10:30, 20:40] = [0.9, 0.3, 0.2] + 0.05 * rng.rand(20, 20, 3)
    saliency = rng.rand(48, 48) * 0.2
    saliency[14:22, 26:34] += 1.0  # the discriminative part, not the whole object
    loc = localize(image, saliency)
    assert iou(loc.box, (20, 10, 40, 30)) > 0.75  # measured 0.83
    assert loc.to_json()["box"] == dict(zip(("x0", "y0", "x1", "y1"), loc.box, strict=True))


def test_digits_boxes_overlap_ink(digits_root: Path, digits_net: Network) -> None:
    values = []
    for label, name in enumerate(DIGIT_NAMES):
        x = load_input(digits_net, sorted((digits_root / name).glob("*.png"))[0])
        neuron = digits_net.resolve_neuron(parse_neuron(f"fc8:{label}"))
        sal = saliency_map(digits_net, x, neuron)[0].numpy()
        rgb = digits_net.preprocessing.to_uint8(x)[0] / 255.0
        ys, xs = np.nonzero(rgb.mean(-1) > 0.25)
        values.append(iou(localize(rgb, sal).box, (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)))
    print("digits box IoU", np.round(values, 2), "mean", np.mean(values))
    assert all(v > 0 for v in values)
    assert np.mean(values) > 0.3


def test_localize_errors() -> None:
    with pytest.raises(ActstatsError, match="constant"):
        seed_masks(np.ones((8, 8)))
    with pytest.raises(ActstatsError, match="seed quantiles"):
        seed_masks(np.random.rand(8, 8), foreground=0.2, background=0.5)
    with pytest.raises(ActstatsError, match="expected one"):
        localize(np.zeros((8, 8, 3)), np.zeros((1, 8, 8)))


def test_cli_localize(digits_root: Path, digits_network_args: list[str], tmp_path: Path) -> None:
    image = sorted((digits_root / "four").glob("*.png"))[0]
    result = runner.invoke(
        actstats.cli.app,
        [
            "localize",
            str(image),
            "--neuron",
            "fc8:4",
            *digits_network_args,
            "-o",
            str(tmp_path / "loc"),
        ],
    )
    assert result.exit_code == 0, result.output
    for name in ("mask.png", "box.json", "overlay.png", "saliency.npy"):
        assert (tmp_path / "loc" / name).is_file()
    # What the files show: the mask holds the salient pixels and the digit's ink, and the
    # box is the mask's bounding box.
    mask = np.asarray(Image.open(tmp_path / "loc" / "mask.png")) > 127
    sal = np.load(tmp_path / "loc" / "saliency.npy")
    assert 0 < mask.sum() < mask.size
    assert sal[mask].mean() > 1.5 * sal[~mask].mean()  # a random mask scores ~1.0
    ink = np.asarray(Image.open(image).convert("L").resize(mask.shape[::-1])) > 127
    assert ink[mask].mean() > ink.mean()  # the mask is inkier than the image as a whole
    ys, xs = np.nonzero(mask)
    box = json.loads((tmp_path / "loc" / "box.json").read_text())["box"]
    assert [box[k] for k in ("x0", "y0", "x1", "y1")] == [
        int(xs.min()),
        int(ys.min()),
        int(xs.max()) + 1,
        int(ys.max()) + 1,
    ]


def test_digit_scenes_boxes_are_the_ink() -> None:
    """On a black background (darken 0) the scene is the ink: its box is where it is bright."""
    digits = np.zeros((3, 32, 32, 3), np.uint8)
    digits[:, 6:26, 10:22] = 255
    scenes, boxes = digit_scenes(digits, darken=0.0, seed=3)
    for scene, box in zip(scenes, boxes, strict=True):
        ys, xs = np.nonzero(scene[..., 0] > 127)
        assert tuple(box) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        assert (box[2] - box[0]) * (box[3] - box[1]) < 0.6 * 32 * 32  # not the whole frame
    again, _ = digit_scenes(digits, darken=0.0, seed=3)
    np.testing.assert_array_equal(scenes, again)


def test_pasted_digits_window_search_beats_both_baselines(
    digits_holdout_root: Path, digits_net: Network
) -> None:
    """Digits pasted onto photographs (benchmarks/localization.py at test size): the window
    search + GraphCut box overlaps the ink better than the whole frame and a centre box of
    the right size; the plain saliency GraphCut is reported beside it."""
    digits, labels = load_test_digits(digits_holdout_root, 2)
    scenes, boxes = digit_scenes(digits, seed=0)
    result = evaluate(digits_net, scenes, labels, boxes)
    means = result["mean_iou"]
    print("pasted digits mean IoU", {k: round(v, 3) for k, v in means.items()})
    assert means[LOCALIZER] > means["centre box"] > means["whole frame"]
    assert means["whole frame"] == pytest.approx(
        np.mean([(b[2] - b[0]) * (b[3] - b[1]) / 32**2 for b in boxes])
    )
