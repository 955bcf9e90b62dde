"""`actstats demo --quick` end to end, with the session's trained networks as its cache."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from actstats.cli import app
from actstats.demo import run as demo
from actstats.demo.digits import write_digit_folders
from actstats.errors import ActstatsError


@pytest.fixture
def seeded_cache(
    tmp_path: Path,
    digits_root: Path,
    digits_weights: Path,
    judge_weights: Path,
) -> Path:
    """A demo cache holding what the demo would build (same folders, seeds and epochs)."""
    cache = tmp_path / "cache"
    target = demo.cache_dir(cache)
    shutil.copytree(digits_root, target / "digits-train")
    for split in ("validation", "test"):
        write_digit_folders(target / f"digits-{split}", split=split)
    shutil.copy(digits_weights, target / "digits_vgg.pth")
    shutil.copy(judge_weights, target / "digits_judge.pth")
    return cache


def test_demo_quick_runs_end_to_end(
    seeded_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ACTSTATS_CACHE", str(seeded_cache))
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["demo", "--quick", "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "report:" in result.output and "report.html" in result.output
    assert "digits and networks (cached)" in result.output
    html = (out / "report.html").read_text()
    quick = demo.DemoConfig.quick()
    for method in quick.methods:
        assert html.count(f'data-method="{method}"') == len(quick.classes)
    # generator samples with their nearest fitted and held-out digits (memorization check)
    assert html.count('data-neighbours-of="generator"') == len(quick.classes)
    assert html.count("real exemplars: top") == len(quick.classes)  # from the demo's store
    assert "held-out real images" in html and "<h2>Class outliers</h2>" in html
    measured = json.loads((out / "realism.json").read_text())
    assert set(measured["classes"]) == set(quick.classes)
    assert set(measured["summary"]) == {*quick.methods, "real"}
    assert measured["summary"]["real"]["judge_agreement"] > 0.5
    samples = json.loads((out / "samples" / "ancestral" / "fc8_7" / "samples.json").read_text())
    assert samples["class"] == "seven" and len(samples["samples"]) == quick.n
    # the single-image tools on 2 held-out digits, with their images, in the report
    assert "Single-image tools" in html
    assert html.count('class="explain-digit"') == 2
    for tool in ("input", "saliency", "inverted", "inverted_prior", "dream"):
        assert html.count(f'data-tool="{tool}"') == 2
    explained = json.loads((out / "explain.json").read_text())
    assert [d["class"] for d in explained["digits"]] == ["zero", "one"]
    for d in explained["digits"]:
        assert all((out / f).stat().st_size > 100 for f in d["files"].values())
        assert 0.0 <= d["localize"]["iou_ink"] <= 1.0
        assert d["invert"]["inverted_prior"]["prior_layers"]
        assert d["invert"]["inverted"]["relative_error"] >= 0.0
        assert d["dream"]["energy_after"] > d["dream"]["energy_before"]


def test_demo_variant_is_recorded_under_its_label(
    seeded_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = demo.DemoConfig(
        classes=("one",),
        methods=("simonyan",),
        n=2,
        steps=4,
        variants=(("simonyan+reg", "suppress", (("prior_weight", 0.0), ("suppress_weight", 0.0))),),
        explain=False,
    )
    demo.run_demo(tmp_path / "run", cache=seeded_cache, config=config)
    meta = json.loads((tmp_path / "run/samples/simonyan+reg/fc8_1/samples.json").read_text())
    assert meta["method"] == "simonyan+reg" and meta["recipe"] == "suppress"
    assert meta["parameters"]["prior_weight"] == 0.0
    assert meta["parameters"]["suppress_weight"] == 0.0
    assert meta["parameters"]["blur_every"] == 4 and meta["parameters"]["init"] == "noise"
    measured = json.loads((tmp_path / "run" / "realism.json").read_text())
    assert set(measured["summary"]) == {"simonyan", "simonyan+reg", "real"}
    assert 'data-method="simonyan+reg"' in (tmp_path / "run" / "report.html").read_text()
    assert not (tmp_path / "run" / "explain.json").exists()


def test_ink_box_and_iou() -> None:
    img = np.zeros((8, 8, 3), np.uint8)
    img[2:5, 3:7] = 255
    assert demo.ink_box(img) == (3, 2, 7, 5)
    assert demo.box_iou((0, 0, 2, 2), (0, 0, 2, 2)) == 1.0
    assert demo.box_iou((0, 0, 2, 2), (1, 0, 3, 2)) == pytest.approx(1 / 3)
    assert demo.box_iou((0, 0, 1, 1), (2, 2, 3, 3)) == 0.0


def test_prepare_assets_trains_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def fake_train(
        module: torch.nn.Module, inputs: torch.Tensor, labels: torch.Tensor, **kwargs: object
    ) -> float:
        calls.append(type(module).__name__)
        return 1.0

    monkeypatch.setattr(demo, "train_classifier", fake_train)
    assert not demo._assets_cached(tmp_path)  # the demo's stage title says "training once"
    first = demo.prepare_assets(tmp_path)
    assert demo._assets_cached(tmp_path)
    assert calls == ["DigitsVGG", "_Judge"]
    assert first.weights.is_file() and first.judge_weights.is_file()
    assert len(list((first.train_root / "zero").glob("*.png"))) > 50
    second = demo.prepare_assets(tmp_path)
    assert calls == ["DigitsVGG", "_Judge"] and second == first


def test_cache_dir_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACTSTATS_CACHE", str(tmp_path / "env"))
    assert demo.cache_dir() == tmp_path / "env" / "demo-v1"
    assert demo.cache_dir(tmp_path / "opt") == tmp_path / "opt" / "demo-v1"
    monkeypatch.delenv("ACTSTATS_CACHE")
    assert demo.cache_dir() == Path.home() / ".cache" / "actstats" / "demo-v1"


def test_demo_refuses_unknown_classes_and_methods(tmp_path: Path) -> None:
    with pytest.raises(ActstatsError, match="choose from zero"):
        demo.run_demo(tmp_path, config=demo.DemoConfig(classes=("eleven",)))
    with pytest.raises(ActstatsError, match="choose from simonyan"):
        demo.run_demo(tmp_path, config=demo.DemoConfig(methods=("dream",)))
