"""The HTML report: built from samples.json files as `actstats sample` writes them."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from actstats.cli import app
from actstats.errors import ActstatsError
from actstats.io.artifacts import SampleResult, write_samples
from actstats.io.report import load_run, metrics_rows, write_report

METHODS = ("simonyan", "suppress", "ancestral")
CLASSES = ("zero", "one")


def _result(cls: int, method: str, k: int) -> SampleResult:
    rng = np.random.default_rng([cls, k, len(method)])
    return SampleResult(
        neuron=f"fc8:{cls}",
        class_name=CLASSES[cls],
        method=method,
        index=k,
        seed=0,
        image=rng.integers(0, 256, (32, 32, 3), dtype=np.uint8),
        target_score=5.0 + k,
        target_probability=0.9,
        nll={"fc6": 10.0, "fc7": 4.0 * (k + 1)},
        nll_per_unit={"fc6": 0.1 * (k + 1), "fc7": 0.2},
        steps=3,
        seconds=0.1,
        batch_size=4,
        parameters={"steps": 3},
        loss_history=[3.0, 2.0, 1.0],
        target_history=[0.0, 1.0, 2.0],
    )


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """Two classes x three methods x two samples, real images, and a realism summary."""
    run = tmp_path / "run"
    for method in METHODS:
        for cls in range(len(CLASSES)):
            write_samples([_result(cls, method, k) for k in range(2)], run / "samples" / method)
    for cls in CLASSES:
        (tmp_path / "real" / cls).mkdir(parents=True)
        for k in range(3):
            Image.fromarray(_result(0, "real", k).image).save(tmp_path / "real" / cls / f"{k}.png")
    (run / "run.json").write_text(json.dumps({"real_root": "../real", "description": "test"}))
    summary = {
        m: {
            "judge_agreement": 0.5,
            "pixel_nll_ratio": 2.0,
            "diversity_judge": 1.0,
            "frechet_net": {"fc6": 1.0},
            "frechet_judge": {"body.2": 2.0},
        }
        for m in (*METHODS, "real")
    }
    (run / "realism.json").write_text(json.dumps({"summary": summary, "definitions": {"x": "y"}}))
    return run


def test_metrics_rows_average_samples(run_dir: Path) -> None:
    sets, _, realism = load_run(run_dir)
    rows = {r["method"]: r for r in metrics_rows(sets, realism)}
    assert list(rows) == [*METHODS, "real"]
    assert rows["suppress"]["n"] == 4
    assert rows["suppress"]["nll"] == {"fc6": pytest.approx(0.15), "fc7": pytest.approx(0.2)}
    assert rows["ancestral"]["frechet_judge"] == {"body.2": 2.0}


def test_report_has_every_class_method_image_and_table(run_dir: Path) -> None:
    html = write_report(run_dir).read_text()
    assert html.count('class="group real"') == len(CLASSES)  # one neuron per class
    assert html.count('<section class="neuron"') == len(CLASSES)
    assert html.count('class="thumb"') == 2 * (3 + 3 * 2)
    for method in METHODS:
        assert html.count(f'data-method="{method}"') == len(CLASSES)
    # 2 classes x (3 real + 3 methods x 2 samples) + 2 plots
    assert len(re.findall(r'<img src="data:image/png;base64,[A-Za-z0-9+/=]{100,}"', html)) == 20
    assert "<table>" in html and "Fréchet distance" in html
    assert (run_dir / "nll_by_layer.png").stat().st_size > 1000
    assert (run_dir / "target_history.png").stat().st_size > 1000


def test_report_cli_and_errors(run_dir: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["report", str(run_dir), "-o", str(tmp_path / "r.html")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "r.html").is_file()
    (tmp_path / "empty").mkdir()
    with pytest.raises(ActstatsError, match=r"no samples\.json below it"):
        load_run(tmp_path / "empty")
    with pytest.raises(ActstatsError, match="not a directory"):
        load_run(tmp_path / "missing")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "samples.json").write_text('{"neuron": "fc8:1"}')
    with pytest.raises(ActstatsError, match=r"samples\.json: not a samples\.json written by"):
        load_run(tmp_path / "bad")
    (run_dir / "realism.json").write_text("{")
    result = CliRunner().invoke(app, ["report", str(run_dir)])
    assert result.exit_code == 1 and "not valid JSON" in result.output


def _chromium() -> str | None:
    return (
        shutil.which("chromium")
        or shutil.which("chromium-browser")
        or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
    )


# Appended to a copy of the page: counts decoded images and clicks the first thumbnail.
_PROBE = """<script>window.addEventListener('load',function(){var imgs=[].slice.call(
document.querySelectorAll('img[src]'));document.body.dataset.total=imgs.length;
document.body.dataset.decoded=imgs.filter(function(i){return i.complete&&i.naturalWidth>0}).length;
document.querySelector('img.thumb').click();var box=document.getElementById('lightbox');
document.body.dataset.enlarged=(!box.hidden&&box.querySelector('img').naturalWidth>0)?'yes':'no';
});</script>"""


def chromium_check(page: Path, tmp_path: Path) -> tuple[str, str]:
    """Load ``page`` (plus the probe) in headless Chromium: the DOM after load, and its log."""
    probe = tmp_path / "probe.html"
    probe.write_text(page.read_text().replace("</body>", _PROBE + "</body>"))
    cmd = [
        _chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--enable-logging=stderr",
        "--v=0",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=5000",
        "--dump-dom",
        probe.as_uri(),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=True)
    return done.stdout, done.stderr


def assert_renders_cleanly(dom: str, log: str, n_images: int) -> None:
    """Every image decoded, the lightbox opens, and the page logged no console error."""
    total = int(re.search(r'data-total="(\d+)"', dom)[1])
    decoded = int(re.search(r'data-decoded="(\d+)"', dom)[1])
    assert total == decoded == n_images
    assert 'data-enlarged="yes"' in dom
    console = [line for line in log.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert console == [], console


@pytest.mark.skipif(
    _chromium() is None, reason="Chromium is not installed (CI: apt-get install -y chromium)"
)
def test_report_loads_in_headless_chromium(run_dir: Path, tmp_path: Path) -> None:
    page = write_report(run_dir)
    dom, log = chromium_check(page, tmp_path)
    assert_renders_cleanly(dom, log, 20)
    assert dom.count("<table>") == 4 and "ancestral" in dom
    assert "http://" not in page.read_text() and "https://" not in page.read_text()  # offline


def test_report_shows_the_single_image_tools(run_dir: Path) -> None:
    tools = ("input", "saliency", "inverted", "inverted_prior", "dream")
    digits = []
    for cls in CLASSES:
        folder = run_dir / "explain" / cls
        folder.mkdir(parents=True)
        for k, tool in enumerate(tools):
            Image.fromarray(_result(0, tool, k).image).save(folder / f"{tool}.png")
        digits.append(
            {
                "class": cls,
                "image": f"../holdout/{cls}/0001.png",
                "neuron": "fc8:0",
                "files": {t: f"explain/{cls}/{t}.png" for t in tools},
                "localize": {"box": [1, 1, 9, 9], "ink_box": [2, 2, 9, 9], "iou_ink": 0.765},
                "invert": {
                    "layer": "conv3_2",
                    "inverted": {"relative_error": 0.4321, "prior_layers": []},
                    "inverted_prior": {"relative_error": 0.5, "prior_layers": ["conv1_1"]},
                },
                "dream": {"layer": "conv3_2", "energy_before": 1.0, "energy_after": 2.5},
            }
        )
    (run_dir / "explain.json").write_text(json.dumps({"digits": digits}))
    html = write_report(run_dir).read_text()
    assert "Single-image tools" in html
    assert html.count('class="explain-digit"') == len(CLASSES)
    for tool in tools:
        assert html.count(f'data-tool="{tool}"') == len(CLASSES)
    assert "IoU 0.765" in html and "activation error 0.432" in html and "1 -&gt; 2.5" in html
    # 20 as without the section + 2 digits x 5 images
    assert len(re.findall(r'<img src="data:image/png;base64,[A-Za-z0-9+/=]{100,}"', html)) == 30


def test_report_without_explain_json_has_no_tools_section(run_dir: Path) -> None:
    assert "Single-image tools" not in write_report(run_dir).read_text()
