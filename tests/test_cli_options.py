"""Every command spells its options the same way, and the old spellings still work.

Each command's one library call is replaced by a recorder, so these tests check only
how the command line becomes arguments (no network is loaded).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import actstats.cli
import actstats.cli.collect
import actstats.cli.demo
import actstats.cli.explain
import actstats.cli.fit
import actstats.cli.sample
from actstats.pipeline.collect import CollectSummary

runner = CliRunner()


def _record(monkeypatch: pytest.MonkeyPatch, module: Any, name: str, result: Any) -> dict:
    calls: dict[str, Any] = {}

    def fake(*args: Any, **kwargs: Any) -> Any:
        calls.update(kwargs, args=args)
        return result

    monkeypatch.setattr(module, name, fake)
    return calls


def _invoke(*args: str) -> Any:
    return runner.invoke(actstats.cli.app, [str(a) for a in args])


def test_collect_lists_network_and_output(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    summary = CollectSummary(store="s", n_images=1, n_classes=1, skipped={}, seconds=0.0)
    calls = _record(monkeypatch, actstats.cli.collect, "collect", summary)
    new = _invoke(
        "collect", tmp_path, "-o", "s.zarr", "--network", "vgg11", "--classes", "a,b",
        "--classes", "c", "--layers", "fc7", "--layers", "fc8,conv5_3", "--no-progress",
    )  # fmt: skip
    assert new.exit_code == 0, new.output
    assert calls["args"] == (str(tmp_path), "s.zarr") and calls["network"] == "vgg11"
    assert calls["classes"] == "a,b,c" and calls["layers"] == ["fc7", "fc8", "conv5_3"]
    assert "deprecated" not in new.output
    calls.clear()
    old = _invoke("collect", tmp_path, "--store", "t.zarr", "--model", "vgg13", "--no-progress")
    assert old.exit_code == 0, old.output
    assert calls["args"] == (str(tmp_path), "t.zarr") and calls["network"] == "vgg13"
    assert "--model is deprecated; use --network" in old.output
    assert "--store is deprecated; use -o/--output" in old.output
    for flag, value in (("--compile", True), ("--no-compile", False), (None, None)):
        calls.clear()
        extra = [flag] if flag else []
        r = _invoke("collect", tmp_path, "-o", "s.zarr", *extra, "--no-progress")
        assert r.exit_code == 0, r.output
        assert calls.get("compile") == value  # None: collect decides (on for CUDA)


def test_fit_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    from actstats.pipeline.fit import FitResult
    from actstats.stats.modelset import ModelSet

    calls = _record(
        monkeypatch, actstats.cli.fit, "fit_store", FitResult(ModelSet({}, [], {}), Path("m"))
    )
    r = _invoke(
        "fit", "s.zarr", "-o", "m", "--classes", "cat,dog", "--layers", "a", "--layers", "b"
    )
    assert r.exit_code == 0, r.output
    assert calls["classes"] == ["cat", "dog"] and calls["layers"] == ["a", "b"]
    r = _invoke("fit", "s.zarr", "-o", "m", "--class", "cat", "--class", "dog", "--layer", "a")
    assert r.exit_code == 0, r.output
    assert calls["classes"] == ["cat", "dog"] and calls["layers"] == ["a"]
    assert "--class is deprecated; use --classes" in r.output
    r = _invoke("fit", "s.zarr", "-o", "m", "--classes", "cat", "--class", "dog")
    assert r.exit_code != 0 and "give one" in r.output


def test_sample_and_explain_name_the_network_and_fitted_models(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = _record(monkeypatch, actstats.cli.sample, "run_sample", [])
    r = _invoke("sample", "m", "--neuron", "fc8:1", "-o", "o", "--network", "vgg11",
                "--layers", "a,b", "--layers", "c")  # fmt: skip
    assert r.exit_code == 0, r.output
    assert calls["args"][0] == Path("m") and calls["network"] == "vgg11"
    assert calls["layers"] == ["a", "b", "c"]
    r = _invoke("sample", "m", "--neuron", "fc8:1", "-o", "o", "--model", "vgg13")
    assert calls["network"] == "vgg13" and "--model is deprecated" in r.output
    calls = _record(monkeypatch, actstats.cli.explain, "run_invert", Path("o"))
    r = _invoke("invert", "i.png", "--layer", "conv3_2", "--fitted", "m", "-o", "o")
    assert r.exit_code == 0, r.output
    assert calls["fitted"] == Path("m") and calls["network"] is None
    r = _invoke("invert", "i.png", "--layer", "conv3_2", "--models", "m", "-o", "o")
    assert calls["fitted"] == Path("m") and "--models is deprecated; use --fitted" in r.output


def test_demo_output(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _record(monkeypatch, actstats.cli.demo, "run_demo", Path("r/report.html"))
    assert _invoke("demo", "-o", "run1").exit_code == 0
    assert calls["args"] == (Path("run1"),)
    r = _invoke("demo", "--out", "run2")
    assert calls["args"] == (Path("run2"),) and "--out is deprecated" in r.output
    assert _invoke("demo").exit_code == 0 and calls["args"] == (Path("demo-run"),)
