"""Resume: a killed or failed collect, rerun, recomputes exactly the unfinished chunks and
equals an uninterrupted run; a rerun with other weights or preprocessing is refused."""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

import actstats.io.data
import actstats.pipeline.collect_graph
from actstats.demo.digits import write_digit_folders
from actstats.errors import ActstatsError
from actstats.io.data import REASONS
from actstats.io.store import open_store, store_state
from actstats.net.network import Network, load_network
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


def _count_writes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record the index of every chunk the pipeline writes from now on."""
    written: list[int] = []
    real = actstats.pipeline.collect_graph.write_chunk

    def counting(store, index, *args, **kwargs):
        written.append(index)
        return real(store, index, *args, **kwargs)

    monkeypatch.setattr(actstats.pipeline.collect_graph, "write_chunk", counting)
    return written


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
    deadline = time.monotonic() + 300  # a loaded CI machine may take a minute to import torch
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

    unfinished = [int(c) for c in np.flatnonzero(~partial["images/done"][:])]
    written = _count_writes(monkeypatch)
    summary = collect(
        root,
        store,
        network="slownet:net",
        device="cpu",
        batch_size=4,
        chunk_size=8,
        reduce={"pool3": "mean"},
    )
    assert sorted(written) == unfinished and summary.chunks_written == len(unfinished)

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


@pytest.fixture(scope="module")
def net() -> Network:
    return load_network("actstats.digits:digits_vgg")


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two classes, 12 images each: three chunks of 8."""
    return write_digit_folders(tmp_path_factory.mktemp("r"), per_class=12, classes=("one", "two"))


def _collect(root: Path, store: Path, net: Network, **kwargs):
    return collect(
        root,
        store,
        network=net,
        layers=["conv3_2", "fc8"],
        reduce={"conv3_2": "mean"},
        chunk_size=8,
        batch_size=4,
        scheduler="sync",
        **kwargs,
    )


@pytest.mark.parametrize("failing", ["acts/conv3_2", "acts/fc8", "images/ok", "images/error"])
def test_fault_between_data_and_done_flag_is_recomputed(
    net: Network, root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    """A crash while chunk 1's ``failing`` array is written: its done flag must still be
    unset, so the rerun recomputes chunk 1 (and any chunk not reached) and nothing else."""
    real_setitem = zarr.Array.__setitem__

    def crashing(self, key, value):
        if self.path == failing and isinstance(key, slice) and key.start == 8:
            raise OSError("injected: disk went away")
        return real_setitem(self, key, value)

    store = tmp_path / "s.zarr"
    with monkeypatch.context() as m:
        m.setattr(zarr.Array, "__setitem__", crashing)
        with pytest.raises(OSError, match="injected"):
            _collect(root, store, net)
    done = zarr.open_group(str(store), mode="r")["images/done"][:]
    unfinished = [int(c) for c in np.flatnonzero(~done)]
    assert not done[1] and len(unfinished) < 3
    written = _count_writes(monkeypatch)
    assert _collect(root, store, net).chunks_written == len(unfinished)
    assert sorted(written) == unfinished
    _collect(root, tmp_path / "straight.zarr", net)
    got, want = _all_arrays(store), _all_arrays(tmp_path / "straight.zarr")
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)


def test_rerun_with_other_weights_or_preprocessing_is_refused(
    net: Network, root: Path, tmp_path: Path
) -> None:
    store = tmp_path / "s.zarr"
    _collect(root, store, net)
    module = load_network("actstats.digits:digits_vgg").module
    with torch.no_grad():
        next(module.parameters()).add_(1e-3)
    other_weights = dataclasses.replace(net, module=module, weights_sha256="")
    assert other_weights.weights_sha256 != net.weights_sha256
    assert other_weights.name == net.name and other_weights.weights == net.weights
    with pytest.raises(ActstatsError, match=r"different weights_sha256; pass --overwrite"):
        _collect(root, store, other_weights)
    pre = dataclasses.replace(net.preprocessing, mean=(0.4, 0.4, 0.4))
    other_pre = dataclasses.replace(net, preprocessing=pre)
    with pytest.raises(ActstatsError, match=r"different preprocessing; pass --overwrite"):
        _collect(root, store, other_pre)
    interpolation = dataclasses.replace(net.preprocessing, interpolation="nearest")
    with pytest.raises(ActstatsError, match=r"different preprocessing"):
        _collect(root, store, dataclasses.replace(net, preprocessing=interpolation))
    assert _collect(root, store, net).chunks_written == 0  # the same network still resumes


def test_interrupted_creation_is_created_again(net: Network, root: Path, tmp_path: Path) -> None:
    """A store killed while its arrays were allocated carries only the creating mark: the
    next run recognises it as actstats' own and creates it again."""
    store = tmp_path / "s.zarr"
    zarr.open_group(str(store), mode="w").attrs["actstats_creating"] = {"version": "1"}
    assert store_state(store) == "creating"
    summary = _collect(root, store, net)
    assert summary.chunks_written == 3 and summary.n_images == 24
    assert store_state(store) == "actstats"


def test_rerun_with_another_chunk_size_is_refused(net: Network, root: Path, tmp_path: Path):
    store = tmp_path / "s.zarr"
    _collect(root, store, net)
    other = {"layers": ["conv3_2", "fc8"], "reduce": {"conv3_2": "mean"}, "batch_size": 4}
    with pytest.raises(ActstatsError, match=r"different chunk_size; pass --overwrite"):
        collect(root, store, network=net, chunk_size=4, scheduler="sync", **other)
    # no --chunk-size given: the store's own is used and the run resumes
    assert collect(root, store, network=net, scheduler="sync", **other).chunks_written == 0


def test_summary_records_unreadable_folders_and_the_store(
    net: Network, root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A class folder that cannot be listed is skipped, recorded with its documented
    reason in the store and the summary, which names the store written."""
    data = Path(shutil.copytree(root, tmp_path / "data"))
    (data / "three").mkdir()
    shutil.copy(next((data / "one").iterdir()), data / "three" / "x.png")
    real_scandir = os.scandir

    def scandir(path="."):
        if isinstance(path, str | os.PathLike) and Path(path).name == "three":
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(actstats.io.data.os, "scandir", scandir)
    summary = _collect(data, tmp_path / "s.zarr", net)
    assert summary.store == str((tmp_path / "s.zarr").resolve())
    assert ("three/", "unreadable folder") in summary.errors
    assert summary.skipped == {"unreadable folder": 1} and "unreadable folder" in REASONS
    assert ("three/", "unreadable folder") in open_store(tmp_path / "s.zarr").errors()
