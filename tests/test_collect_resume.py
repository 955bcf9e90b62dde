"""Resume: a collect process killed with SIGKILL, rerun, equals an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

from actstats.demo.digits import write_digit_folders
from actstats.pipeline.collect import collect

# A digits net that sleeps in every forward pass, so the kill lands mid-run.
SLOW_NET = """
import time
from actstats.demo.digits import digits_vgg

def net():
    module = digits_vgg()
    module.register_forward_pre_hook(lambda *_: time.sleep(0.15))
    return module
"""


def _all_arrays(store: Path) -> dict[str, np.ndarray]:
    group = zarr.open_group(str(store), mode="r")
    return {name: arr[:] for name, arr in group.arrays()} | {
        f"{sub}/{name}": arr[:] for sub, g in group.groups() for name, arr in g.arrays()
    }


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_killed_run_resumes_to_identical_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = write_digit_folders(tmp_path / "data", per_class=8)
    (tmp_path / "slownet.py").write_text(SLOW_NET)
    monkeypatch.syspath_prepend(str(tmp_path))
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    store = tmp_path / "killed.zarr"
    cmd = [
        sys.executable,
        "-c",
        "import actstats.cli as c; c.main()",
        "collect",
        str(root),
        "-o",
        str(store),
        "--model",
        "slownet:net",
        "--device",
        "cpu",
        "--batch-size",
        "4",
        "--chunk-size",
        "8",
        "--reduce",
        "pool3=mean",
        "--no-progress",
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    done = np.zeros(1, dtype=bool)
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            done = zarr.open_group(str(store), mode="r")["images/done"][:]
        except (FileNotFoundError, KeyError, ValueError):
            done = np.zeros(1, dtype=bool)
        if done.any():
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert done.any() and proc.returncode == -signal.SIGKILL, proc.stdout.read().decode()
    partial = zarr.open_group(str(store), mode="r")
    assert not partial["images/done"][:].all() and not partial.attrs["actstats"]["complete"]

    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr

    reference = tmp_path / "straight.zarr"
    collect(
        root,
        reference,
        network="slownet:net",
        device="cpu",
        batch_size=4,
        chunk_size=8,
        reduce={"pool3": "mean"},
    )
    got, want = _all_arrays(store), _all_arrays(reference)
    assert sorted(got) == sorted(want)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    got_attrs = zarr.open_group(str(store), mode="r").attrs["actstats"]
    assert got_attrs == zarr.open_group(str(reference), mode="r").attrs["actstats"]
