"""`actstats demo --quick` end to end, with the session's trained networks as its cache."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from actstats import demo
from actstats.cli import app
from actstats.errors import ActstatsError


@pytest.fixture
def seeded_cache(
    tmp_path: Path,
    digits_root: Path,
    digits_holdout_root: Path,
    digits_weights: Path,
    judge_weights: Path,
) -> Path:
    """A demo cache holding what the demo would build (same folders, seeds and epochs)."""
    cache = tmp_path / "cache"
    target = demo.cache_dir(cache)
    shutil.copytree(digits_root, target / "digits-train")
    shutil.copytree(digits_holdout_root, target / "digits-holdout")
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
    html = (out / "report.html").read_text()
    quick = demo.DemoConfig.quick()
    for method in quick.methods:
        assert html.count(f'data-method="{method}"') == len(quick.classes)
    assert html.count('class="row real"') == len(quick.classes)
    measured = json.loads((out / "realism.json").read_text())
    assert set(measured["classes"]) == set(quick.classes)
    assert set(measured["summary"]) == {*quick.methods, "real"}
    assert measured["summary"]["real"]["judge_agreement"] > 0.5
    samples = json.loads((out / "samples" / "ancestral" / "fc8_7" / "samples.json").read_text())
    assert samples["class"] == "seven" and len(samples["samples"]) == quick.n


def test_prepare_assets_trains_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def fake_train(
        module: torch.nn.Module, inputs: torch.Tensor, labels: torch.Tensor, **kwargs: object
    ) -> float:
        calls.append(type(module).__name__)
        return 1.0

    monkeypatch.setattr(demo, "train_classifier", fake_train)
    first = demo.prepare_assets(tmp_path)
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
