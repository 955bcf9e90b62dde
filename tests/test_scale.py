"""collect and fit on dask.distributed, and on fsspec URLs.

One LocalCluster of 2 worker processes (started by ``actstats.pipeline.cluster.connect``,
as ``--workers 2`` does) serves every test through its address, as
``--scheduler ADDRESS`` does. Its scheduler allows no retries, so a worker
killed mid-run fails the run and the rerun must fill the gap.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import dask
import numpy as np
import pytest
import zarr
from typer.testing import CliRunner

import actstats.cli
from actstats.demo.digits import write_digit_folders
from actstats.errors import ActstatsError
from actstats.io.modelfile import load_models as load
from actstats.io.modelfile import read_model_dir
from actstats.pipeline.cluster import _cuda_cluster, connect
from actstats.pipeline.collect import collect
from actstats.pipeline.fit import fit_store

MODEL = "actstats.demo.digits:digits_vgg"
OPTIONS = {"device": "cpu", "batch_size": 4, "chunk_size": 8, "reduce": {"pool3": "mean"}}
CLI_OPTIONS = ["--device", "cpu", "--batch-size", "4", "--chunk-size", "8"]
CLI_OPTIONS += ["--reduce", "pool3=mean", "--no-progress"]

# The digits net, except that a dask worker's 5th forward pass (its 3rd chunk, after
# two written ones) kills the worker process, once per test session (marker file).
DYING_NET = """
import os
from actstats.demo.digits import digits_vgg

_calls = [0]

def _maybe_die(*_):
    try:
        from distributed import get_worker
        get_worker()
    except ValueError:
        return
    _calls[0] += 1
    marker = os.environ["ACTSTATS_TEST_DIE_MARKER"]
    if _calls[0] == 5 and os.path.exists(marker):
        try:
            os.rename(marker, marker + ".taken")
        except OSError:
            return
        os._exit(1)

def net():
    module = digits_vgg()
    module.register_forward_pre_hook(_maybe_die)
    return module
"""


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """10 digit classes, 6 images each: 8 chunks of 8."""
    return write_digit_folders(tmp_path_factory.mktemp("scale") / "data", per_class=6)


@pytest.fixture(scope="module")
def address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A 2-process LocalCluster that can import ``dyingnet``; its scheduler address."""
    where = tmp_path_factory.mktemp("nets")
    (where / "dyingnet.py").write_text(DYING_NET)
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(where))
        mp.setenv("PYTHONPATH", os.pathsep.join([str(where), *sys.path]))
        mp.setenv("ACTSTATS_TEST_DIE_MARKER", str(where / "die"))
        with (
            dask.config.set({"distributed.scheduler.allowed-failures": 0}),
            connect(None, 2) as client,
        ):
            client.wait_for_workers(2)
            yield client.scheduler.address


@pytest.fixture(scope="module")
def reference(root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The single-process (threaded) store."""
    store = tmp_path_factory.mktemp("ref") / "ref.zarr"
    collect(root, store, network=MODEL, **OPTIONS)
    return store


def _arrays(store: str | Path) -> dict[str, np.ndarray]:
    group = zarr.open_group(str(store), mode="r")
    return {f"{sub}/{name}": a[:] for sub, g in group.groups() for name, a in g.arrays()}


def _assert_same_store(got: str | Path, want: str | Path) -> None:
    a, b = _arrays(got), _arrays(want)
    assert sorted(a) == sorted(b)
    for name in b:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    attrs = [dict(zarr.open_group(str(s), mode="r").attrs["actstats"]) for s in (got, want)]
    assert attrs[0] == attrs[1]


def _assert_same_models(got: str | Path, want: str | Path) -> None:
    (_, a), (_, b) = read_model_dir(got), read_model_dir(want)
    assert [(e["class"], e["layer"], e["kind"]) for e in a] == [
        (e["class"], e["layer"], e["kind"]) for e in b
    ]
    for x, y in zip(a, b, strict=True):
        assert x["params"] == y["params"]
        for name in y["arrays"]:
            np.testing.assert_array_equal(x["arrays"][name], y["arrays"][name], err_msg=name)


def _invoke(*args: str) -> None:
    result = CliRunner().invoke(actstats.cli.app, list(args))
    assert result.exit_code == 0, result.output


def test_cluster_store_and_models_equal_single_process(
    root: Path, address: str, reference: Path, tmp_path: Path
) -> None:
    store = tmp_path / "dist.zarr"
    _invoke(
        "collect",
        str(root),
        "-o",
        str(store),
        "--model",
        MODEL,
        *CLI_OPTIONS,
        "--scheduler",
        address,
    )
    _assert_same_store(store, reference)

    fit_store(reference, tmp_path / "ref-models", scheduler="sync")
    _invoke("fit", str(store), "-o", str(tmp_path / "models"), "--scheduler", address)
    _assert_same_models(tmp_path / "models", tmp_path / "ref-models")


def test_killed_worker_loses_only_its_unfinished_chunks(
    root: Path, address: str, tmp_path: Path
) -> None:
    want = tmp_path / "want.zarr"
    collect(root, want, network="dyingnet:net", **OPTIONS)
    Path(os.environ["ACTSTATS_TEST_DIE_MARKER"]).touch()
    store = tmp_path / "killed.zarr"
    with pytest.raises(ActstatsError, match=r"lost with a dask worker.*rerun"):
        collect(root, store, network="dyingnet:net", scheduler=address, **OPTIONS)
    done = zarr.open_group(str(store), mode="r")["images/done"][:]
    assert 0 < done.sum() < len(done)
    assert not Path(os.environ["ACTSTATS_TEST_DIE_MARKER"]).exists()  # the worker did die

    summary = collect(root, store, network="dyingnet:net", scheduler=address, **OPTIONS)
    assert summary.chunks_written == len(done) - done.sum()
    _assert_same_store(store, want)


def test_memory_store_and_models_round_trip(root: Path, reference: Path, tmp_path: Path) -> None:
    url = "memory://actstats-test/acts.zarr"
    collect(root, url, network=MODEL, overwrite=True, **OPTIONS)
    got, want = _arrays(url), _arrays(reference)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)

    fit_store(reference, tmp_path / "ref-models", scheduler="sync")
    result = fit_store(url, "memory://actstats-test/models", scheduler="sync", overwrite=True)
    assert result.path == "memory://actstats-test/models"
    assert result.models.provenance["store"] == url
    _assert_same_models("memory://actstats-test/models", tmp_path / "ref-models")
    fit_store(url, tmp_path / "local-models", scheduler="sync")
    _assert_same_models(tmp_path / "local-models", tmp_path / "ref-models")
    assert load("memory://actstats-test/models").classes == load(tmp_path / "ref-models").classes

    with pytest.raises(ActstatsError, match="memory:// lives in this process"):
        collect(root, url, network=MODEL, workers=2, **OPTIONS)
    with pytest.raises(ActstatsError, match="exists; pass --overwrite"):
        fit_store(url, "memory://actstats-test/models")


def test_cluster_option_errors() -> None:
    with pytest.raises(ActstatsError, match="give one"), connect("tcp://x:1", 2):
        pass
    with pytest.raises(ActstatsError, match="at least 1"), connect(None, 0):
        pass
    try:
        import dask_cuda  # noqa: F401
    except ImportError:
        with pytest.raises(ActstatsError, match="pip install dask-cuda"):
            _cuda_cluster(1)
