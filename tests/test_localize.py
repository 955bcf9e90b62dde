"""GraphCut localization: exact on a synthetic object, overlapping the ink on the digits."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import actstats.cli
from actstats.demo.digits import DIGIT_NAMES, digit_scenes
from actstats.errors import ActstatsError
from actstats.eval.realism import to_inputs
from actstats.explain.localize import localize, localize_in_windows, seed_masks
from actstats.explain.saliency import saliency_map
from actstats.explain.search import crop_window, ranked_windows, square_windows
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


def test_windows_saliency_is_weighed_per_pixel_not_by_gradient_scale() -> None:
    """Two crops: one on the object with a map peaked there, one on clutter whose gradient is
    1000x larger everywhere. Scaled to unit mean, the clutter crop's flat map seeds nothing;
    pixels outside both windows are background, so the box is the object's."""
    rng = np.random.RandomState(1)
    image = 0.2 + 0.05 * rng.rand(48, 48, 3)
    image[10:30, 8:24] = [0.9, 0.8, 0.2] + 0.05 * rng.rand(20, 16, 3)
    image[34:46, 30:46] = [0.2, 0.3, 0.9]  # a second object no window covers
    on_object = rng.rand(32, 32) * 0.1
    on_object[8:24, 8:20] += 1.0  # crop (4, 6)-(36, 38) at scale 1: the object's middle
    clutter = 1000.0 * (1.0 + 0.01 * rng.rand(16, 16))
    loc = localize_in_windows(
        image, [on_object, clutter], [(4, 6, 36, 38), (24, 0, 48, 24)], [1.0, 1.0]
    )
    assert iou(loc.box, (8, 10, 24, 30)) > 0.75
    assert not loc.foreground_seeds[34:46, 30:46].any()
    assert loc.background_seeds[40:, :].all()  # outside every window
    with pytest.raises(ActstatsError, match="one of each per window"):
        localize_in_windows(image, [on_object], [(4, 6, 36, 38)], [1.0, 0.5])


def test_ranked_windows_match_a_direct_loop(digits_net: Network) -> None:
    """Every window of the grid, each scored by its own crop's class log-probability, best
    first -- the same numbers a loop over single crops gives."""
    scene = digit_scenes(np.full((1, 32, 32, 3), 200, np.uint8), seed=2)[0][0]
    x = to_inputs(digits_net, scene[None])
    neuron = digits_net.resolve_neuron(parse_neuron("fc8:3"))
    ranked = ranked_windows(digits_net, x, neuron, min_side=0.75, stride=4)
    expected = square_windows(32, 32, range(24, 33, 4), 4)
    assert sorted(w for w, _ in ranked) == sorted(expected)
    scores = [s for _, s in ranked]
    assert scores == sorted(scores, reverse=True)
    with torch.no_grad():
        for window, score in ranked[:: max(1, len(ranked) // 5)]:
            logits = digits_net.activations(crop_window(x, window), ["fc8"])["fc8"]
            assert score == pytest.approx(float(torch.log_softmax(logits, 1)[0, 3]), abs=1e-5)
    with pytest.raises(ActstatsError, match="stride"):
        ranked_windows(digits_net, x, neuron, stride=0)


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


def test_cli_localize_by_window_search(
    digits_root: Path, digits_network_args: list[str], tmp_path: Path
) -> None:
    """``--windows 20`` on a digit pasted onto a photograph: the mask is on the ink, the
    box says how it was found (input x gradient by default); a negative count is refused."""
    digit = np.asarray(Image.open(sorted((digits_root / "seven").glob("*.png"))[0]).convert("RGB"))
    scenes, boxes = digit_scenes(digit[None], seed=4)
    Image.fromarray(scenes[0]).save(tmp_path / "scene.png")
    args = ["localize", str(tmp_path / "scene.png"), "--neuron", "fc8:7", *digits_network_args]
    result = runner.invoke(actstats.cli.app, [*args, "--windows", "20", "-o", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "o" / "box.json").read_text())
    assert (record["windows"], record["kind"]) == (20, "input-gradient")
    mask = np.asarray(Image.open(tmp_path / "o" / "mask.png")) > 127
    x0, y0, x1, y1 = boxes[0]
    truth = np.zeros_like(mask)
    truth[y0:y1, x0:x1] = True
    assert truth[mask].mean() > 2 * truth.mean()  # the mask sits on the ink's box
    bad = runner.invoke(actstats.cli.app, [*args, "--windows", "-1", "-o", str(tmp_path / "b")])
    assert bad.exit_code != 0
    assert "--windows -1" in bad.output
    assert not (tmp_path / "b").exists()
