"""The programs in examples/ import a fitted model without the CLI; they must keep working."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _run(name: str) -> str:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_score_typicality_flags_the_planted_outlier() -> None:
    out = _run("score_typicality.py")
    rows = [line for line in out.splitlines() if line.startswith("row ")]
    assert rows, out
    d2 = [float(line.split("d2")[1].split()[0]) for line in rows]
    assert d2[0] == max(d2), "the first row is the atypical one and must score furthest"
    assert "most outlying unit 1 " in rows[0], "unit 1 is the one that was pushed out"


@pytest.mark.parametrize("name", ["conditional_sampling.py"])
def test_conditional_sampling_fixes_the_unit(name: str) -> None:
    out = _run(name)
    fixed = [line for line in out.splitlines() if line.startswith("fixed unit")]
    assert fixed and "[3. 3. 3. 3.]" in fixed[0], out
