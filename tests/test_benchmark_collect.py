"""benchmarks/collect.py at test size: ImageNet-shaped JPEGs and the decode-limit ratio."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

BENCH = Path(__file__).parent.parent / "benchmarks"
sys.path.insert(0, str(BENCH))
from collect import write_imagenet_jpegs  # noqa: E402


def test_imagenet_jpegs_are_shaped_like_imagenet(tmp_path: Path) -> None:
    files = write_imagenet_jpegs(tmp_path, 32)
    sizes, modes, progressive = set(), set(), 0
    for f in files:
        with Image.open(f) as im:
            assert im.format == "JPEG"
            sizes.add(im.size)
            modes.add(im.mode)
            progressive += bool(im.info.get("progressive"))
    assert (500, 375) in sizes and any(h > w for w, h in sizes)  # landscape and portrait
    assert modes == {"RGB", "L"} and progressive == 4  # one in 8 progressive, some grayscale
    assert len({f.parent.name for f in files}) == 4


def test_collect_benchmark_reports_pipeline_over_the_lower_limit(tmp_path: Path) -> None:
    label = "test"
    subprocess.run(
        [
            sys.executable,
            str(BENCH / "collect.py"),
            "--model",
            "actstats.demo.digits:digits_vgg",
            "--weights",
            "none",
            "--size",
            "32",
            "--images",
            "48",
            "--batch-size",
            "16",
            "--device",
            "cpu",
            "--imagenet-jpegs",
            "--repeats",
            "1",
            "--out",
            str(tmp_path),
            "--label",
            label,
        ],
        check=True,
        capture_output=True,
    )
    r = json.loads((tmp_path / f"collect-{label}.json").read_text())
    limit = r["decode_limit_images_per_s"]["cpu"]
    assert limit > 0 and r["format"] == "imagenet-jpeg" and r["decode"] == "cpu"
    bound = min(r["forward_only_images_per_s"], limit)
    assert r["ratio_vs_min_forward_and_decode_limit"] == pytest.approx(
        r["pipeline_images_per_s"] / bound
    )
    shared = 1 / (1 / r["forward_only_images_per_s"] + 1 / limit)  # a CPU: cores shared
    assert r["shared_cores_bound_images_per_s"] == pytest.approx(shared)
    assert shared < bound
    assert (
        "pipeline / min(forward-only, decode limit"
        in (tmp_path / f"collect-{label}.md").read_text()
    )
