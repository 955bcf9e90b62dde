"""Fuzz suite: hostile files, hostile option values and manifests, concurrent writers, kills.

Each test is a probe of one way to lose data, run code a file names, hang, or die
with a traceback; each asserts that nothing is lost and that a refusal is one
line naming the path or option and what to do. Kills are real SIGKILLs of a
subprocess (``tests/_killer.py``) at store creation, mid-run and during
``fit --overwrite``.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import _hostile as hostile
import numpy as np
import pytest
import zarr
from _store_factory import make_store
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import actstats.cli.collect
import actstats.cli.fit
import actstats.cli.report
import actstats.cli.sample
from actstats.cli import app
from actstats.errors import ActstatsError
from actstats.io.locks import writer_lock
from actstats.io.modelfile import load_models as load
from actstats.io.paths import decode_name
from actstats.io.store import open_store
from actstats.net.network import load_network
from actstats.pipeline.collect import collect
from actstats.pipeline.fit import DegenerateClassWarning, fit_store

FACTORY = "actstats.demo.digits:digits_vgg"
LAYERS = ["conv1_1", "fc8"]
REDUCE = {"conv1_1": "mean"}
TESTS = Path(__file__).parent
REPO = TESTS.parent
runner = CliRunner()


def _one_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, text
    assert lines[0].startswith("error:"), text
    return lines[0]


def _good_root(path: Path, per_class: int = 4) -> Path:
    for c, cls in enumerate(("a", "b")):
        (path / cls).mkdir(parents=True)
        for i in range(per_class):
            hostile.png(path / cls / f"{i}.png", seed=10 * c + i)
    return path


def _collect_args(root: Path, store: Path, *extra: str) -> list[str]:
    return [
        "collect", str(root), "-o", str(store), "--network", FACTORY, "--device", "cpu",
        "--layers", ",".join(LAYERS), "--reduce", "conv1_1=mean", "--batch-size", "2",
        "--chunk-size", "2", "--no-progress", *extra,
    ]  # fmt: skip


def _run(args: list[str], kill: tuple[str, int, str] | None = None, timeout: float = 180):
    """The CLI in a subprocess, SIGKILLed at ``kill`` = (MODULE:ATTR, N, before|after)."""
    prefix = [str(TESTS / "_killer.py"), kill[0], str(kill[1]), kill[2], "--"] if kill else []
    cmd = [sys.executable, *prefix] if kill else [sys.executable, "-m", "actstats"]
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{TESTS}", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [*cmd, *args], capture_output=True, text=True, env=env, timeout=timeout, cwd=REPO
    )


def _same_store(a: Path, b: Path) -> None:
    sa, sb = open_store(a), open_store(b)
    assert sa.attrs["complete"] and sb.attrs["complete"]
    for name in ("images/path", "images/ok", "images/label", "images/done"):
        np.testing.assert_array_equal(sa.group[name][:], sb.group[name][:])
    for layer in LAYERS:
        np.testing.assert_array_equal(sa.acts(layer)[:], sb.acts(layer)[:])


@pytest.fixture(scope="module")
def net():
    return load_network(FACTORY, device="cpu")


@pytest.fixture(scope="module")
def good(tmp_path_factory, net):
    """A clean root and its store collected in one uninterrupted run (the reference)."""
    base = tmp_path_factory.mktemp("good")
    root = _good_root(base / "root")
    collect(
        root, base / "ref.zarr", network=net, layers=LAYERS, reduce=REDUCE, batch_size=2,
        chunk_size=2,
    )  # fmt: skip
    return root, base / "ref.zarr"


# ------------------------------------------------------------------- hostile files
def test_every_hostile_file_is_skipped_and_recorded(tmp_path: Path, net) -> None:
    root = _good_root(tmp_path / "root")
    made = {kind: build(root / "a") for kind, build in hostile.HOSTILE_IMAGES.items()}
    (root / "empty_class").mkdir()
    summary = collect(root, tmp_path / "s.zarr", network=net, layers=LAYERS, reduce=REDUCE)
    reasons = dict(summary.errors)
    expected = {
        "symlink loop": "broken symlink",
        "fifo": "not a regular file",
        "dev zero": "not a regular file",
        "sliver": "extreme aspect ratio",
        "empty": "empty file",
        "text": "not an image",
        "truncated": "truncated",
    }
    for kind, reason in expected.items():
        assert reasons[f"a/{made[kind].name}"] == reason, kind
    assert reasons["empty_class/"] == "empty class folder"
    store = open_store(tmp_path / "s.zarr")
    paths = list(store.group["images/path"][:])
    ok = store.group["images/ok"][:]
    # the Latin-1 name is stored losslessly, decodes back to the file, and was used
    (raw,) = [p for p in paths if p.startswith("\0")]
    assert (root / decode_name(raw)).read_bytes() == made["non-utf8 name"].read_bytes()
    assert ok[paths.index(raw)]
    assert all(ok[paths.index(f"{c}/{i}.png")] for c in "ab" for i in range(4))
    assert "a/again" not in paths  # a folder symlink is a folder, not a file
    assert summary.n_images == 9


def test_source_folder_is_never_an_output(tmp_path: Path, net) -> None:
    root = _good_root(tmp_path / "root")
    before = sorted(p.name for p in (root / "a").iterdir())
    for out in (root, root / "a" / "s.zarr", tmp_path):
        with pytest.raises(
            ActstatsError, match=r"overlaps the source folder .*nothing was written"
        ):
            collect(root, out, network=net, layers=LAYERS, overwrite=True)
    assert sorted(p.name for p in (root / "a").iterdir()) == before
    res = runner.invoke(app, _collect_args(root, root, "--overwrite"))
    assert res.exit_code == 1 and "overlaps the source folder" in _one_line(res.output)


def test_output_naming_an_existing_file(tmp_path: Path, good) -> None:
    root, ref = good
    target = tmp_path / "notes.txt"
    target.write_text("keep me")
    for extra in ([], ["--overwrite"]):
        res = runner.invoke(app, _collect_args(root, target, *extra))
        assert res.exit_code == 1 and "is not an actstats store" in _one_line(res.output)
    res = runner.invoke(app, ["fit", str(ref), "-o", str(target), "--overwrite"])
    assert res.exit_code == 1 and "notes.txt" in _one_line(res.output)
    assert target.read_text() == "keep me"


def test_changed_file_is_refused_on_resume(tmp_path: Path, good, net) -> None:
    root = shutil.copytree(good[0], tmp_path / "root")
    store = tmp_path / "s.zarr"
    kw = {"network": net, "layers": LAYERS, "reduce": REDUCE, "chunk_size": 2}
    collect(root, store, **kw)
    g = zarr.open_group(str(store), mode="r+")  # as if killed before the last chunk
    g["images/done"][3] = False
    hostile.png(root / "a" / "0.png", seed=99)  # same name, other pixels
    with pytest.raises(ActstatsError, match=r"1 file\(s\) changed since .*: a/0.png; restore"):
        collect(root, store, **kw)
    assert collect(root, store, overwrite=True, **kw).n_images == 8


def test_float16_overflow_is_clipped_and_counted(tmp_path: Path, good) -> None:
    loud = load_network(FACTORY, device="cpu")
    with np.errstate(all="ignore"):
        loud.module.classifier[-1].weight.data *= 1e7  # fc8 far beyond 65504
    kw = {"network": loud, "layers": ["fc8"]}
    with pytest.warns(UserWarning, match=r"float16 activation values exceeded \+-65504"):
        s16 = collect(good[0], tmp_path / "h.zarr", dtype="float16", **kw)
    collect(good[0], tmp_path / "f.zarr", dtype="float32", **kw)
    x16 = open_store(tmp_path / "h.zarr").acts("fc8")[:].astype(np.float64)
    x32 = open_store(tmp_path / "f.zarr").acts("fc8")[:].astype(np.float64)
    assert np.isfinite(x16).all()
    over = np.abs(x32) > 65504
    assert s16.clipped == int(over.sum()) > 0
    np.testing.assert_array_equal(np.abs(x16[over]), 65504)
    np.testing.assert_allclose(x16[~over], x32[~over], rtol=1e-3)
    counts = open_store(tmp_path / "h.zarr").group["images/clipped"][:]
    np.testing.assert_array_equal(counts, over.sum(axis=1))


# ---------------------------------------------------------------- store creation kills
@pytest.mark.parametrize(
    ("target", "n"), [("zarr:Group.create_array", 3), ("zarr:Group.create_array", 9)]
)
def test_kill_at_store_creation_then_resume(tmp_path: Path, good, target: str, n: int) -> None:
    root, ref = good
    store = tmp_path / "s.zarr"
    killed = _run(_collect_args(root, store), kill=(target, n, "before"))
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert store.exists()  # half-created
    res = _run(_collect_args(root, store))
    assert res.returncode == 0, res.stderr
    _same_store(store, ref)


def test_kill_mid_run_then_resume(tmp_path: Path, good) -> None:
    root, ref = good
    store = tmp_path / "s.zarr"
    killed = _run(
        _collect_args(root, store), kill=("actstats.pipeline.collect_graph:write_chunk", 1, "after")
    )
    assert killed.returncode == -signal.SIGKILL
    assert 0 < open_store(store).done.sum() < 4 and not open_store(store).attrs["complete"]
    res = runner.invoke(app, ["fit", str(store), "-o", str(tmp_path / "m")])
    assert res.exit_code == 1 and "incomplete" in _one_line(res.output)
    assert "--allow-incomplete" in res.output
    res = _run(_collect_args(root, store))
    assert res.returncode == 0, res.stderr
    _same_store(store, ref)


# ----------------------------------------------------------------- fit --overwrite kills
@pytest.fixture(scope="module")
def fitted(good, tmp_path_factory):
    base = tmp_path_factory.mktemp("fitted")
    fit_store(good[1], base / "models")
    return base / "models"


def _manifest(path: Path) -> dict:
    return json.loads((path / "manifest.json").read_text())


@pytest.mark.parametrize(
    "kill",
    [
        ("fsspec.implementations.local:LocalFileSystem.pipe_file", 3, "before"),
        ("actstats.io.modelfile:_swap_into_place", 1, "before"),
        ("os:replace", 1, "after"),  # between moving the old models aside and the new in
    ],
)
def test_kill_during_fit_overwrite_keeps_the_old_models(
    tmp_path: Path, good, fitted: Path, kill
) -> None:
    models = shutil.copytree(fitted, tmp_path / "models")
    old = _manifest(models)
    args = ["fit", str(good[1]), "-o", str(models), "--overwrite", "--seed", "1"]
    assert _run(args, kill=kill).returncode == -signal.SIGKILL
    if models.exists():
        assert _manifest(models) == old and load(models).classes == load(fitted).classes
    else:  # killed between the two renames: the old models wait beside it
        (aside,) = tmp_path.glob(".models.actstats-old-*")
        assert _manifest(aside) == old
    res = _run(args)  # the next run recovers, finishes and cleans up
    assert res.returncode == 0, res.stderr
    assert _manifest(models)["provenance"]["fit"]["seed"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [".models.lock", "models"]


# ------------------------------------------------------------------ concurrent writers
def test_second_writer_gets_one_line_naming_the_holder(tmp_path: Path, good, fitted) -> None:
    root, ref = good
    with writer_lock(tmp_path / "s.zarr", "store"):
        res = _run(_collect_args(root, tmp_path / "s.zarr"))
    assert res.returncode == 1
    line = _one_line(res.stderr)
    assert f"another writer holds it (pid {os.getpid()}" in line
    assert not (tmp_path / "s.zarr").exists()
    models = shutil.copytree(fitted, tmp_path / "m")
    held, done = threading.Event(), threading.Event()

    def holder() -> None:  # the lock is re-entrant in one thread: hold it from another
        with writer_lock(models, "model directory"):
            held.set()
            done.wait(60)

    thread = threading.Thread(target=holder)
    thread.start()
    held.wait(60)
    try:
        res = runner.invoke(app, ["fit", str(ref), "-o", str(models), "--overwrite"])
    finally:
        done.set()
        thread.join()
    assert res.exit_code == 1 and "another writer holds it" in _one_line(res.output)
    assert _manifest(models) == _manifest(fitted)


def test_two_collects_racing_on_one_store(tmp_path: Path, good) -> None:
    root, ref = good
    store = tmp_path / "s.zarr"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "actstats", *_collect_args(root, store, "--overwrite")]
    procs = [subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    results = [(p.wait(timeout=180), p.stderr.read()) for p in procs]
    refused = [err for rc, err in results if rc == 1]
    assert sorted(rc for rc, _ in results) in ([0, 0], [0, 1]), results
    for err in refused:
        assert "another writer holds it" in _one_line(err)
    _same_store(store, ref)  # one run's rows only, complete


# -------------------------------------------------------------- model-dir hostility
def _tamper(models: Path, tmp_path: Path, how) -> Path:
    copy = shutil.copytree(models, tmp_path / "t")
    how(copy)
    return copy


def _first_array(models: Path) -> Path:
    return models / _manifest(models)["entries"][0]["arrays"]["mean"]["file"]


def _relink(target: str):
    def how(models: Path) -> None:
        path = _first_array(models)
        path.unlink()
        os.symlink(target, path)

    return how


def _fifo(models: Path) -> None:
    path = _first_array(models)
    path.unlink()
    os.mkfifo(path)


def _huge_header(models: Path) -> None:
    hostile.huge_header_npy(_first_array(models))


def _deep(models: Path) -> None:
    (models / "manifest.json").write_text(hostile.deep_json())


def _factory(models: Path) -> None:
    m = _manifest(models)
    m["provenance"]["model"] = "os:abort"
    (models / "manifest.json").write_text(json.dumps(m))


@pytest.mark.parametrize(
    ("how", "match"),
    [
        (_relink("/dev/zero"), "symlink"),
        (_relink("/etc/hostname"), "symlink"),
        (_fifo, "not a regular file"),
        (_huge_header, "more than the|sha256"),
        (_deep, "nested deeper than 32 levels"),
    ],
)
def test_hostile_model_dir_is_refused_in_one_line(tmp_path, fitted, how, match) -> None:
    models = _tamper(fitted, tmp_path, how)
    with pytest.raises(ActstatsError, match=match) as info:
        load(models)
    assert "\n" not in str(info.value)


def test_sample_never_imports_the_factory_a_file_names(tmp_path, fitted, monkeypatch) -> None:
    called = []
    monkeypatch.setattr(os, "abort", lambda: called.append("abort"))
    models = _tamper(fitted, tmp_path, _factory)
    for cmd in (
        ["sample", str(models), "--neuron", "fc8:1", "-o", str(tmp_path / "o")],
        ["saliency", str(REPO / "README.md"), "--neuron", "fc8:1", "--fitted", str(models),
         "-o", str(tmp_path / "s.png")],
    ):  # fmt: skip
        res = runner.invoke(app, cmd)
        assert res.exit_code == 1
        assert "names the factory 'os:abort'; actstats never imports" in _one_line(res.output)
    assert called == []


# ------------------------------------------------------------ options and manifests
_BAD_NUMBERS = st.one_of(
    st.sampled_from(["nan", "inf", "-inf", "-1", "0", "1e400", str(2**64), "-0.0", "1e-400"]),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(min_value=-(2**80), max_value=2**80).map(str),
)
_NUMERIC = {
    "sample": {"-n": "int", "--seed": "int", "--steps": "int", "--lr": "float",
               "--prior-weight": "float"},
    "fit": {"--seed": "int", "--workers": "int"},
    "collect": {"--per-class": "int", "--batch-size": "int", "--chunk-size": "int",
                "--workers": "int"},
    "report": {"--n-real": "int"},
}  # fmt: skip


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    command=st.sampled_from(sorted(_NUMERIC)),
    data=st.data(),
    value=_BAD_NUMBERS,
)
def test_numeric_options_are_checked_at_the_edge(command, data, value, tmp_path_factory) -> None:
    flag = data.draw(st.sampled_from(sorted(_NUMERIC[command])))
    calls = []
    target = {
        "sample": (actstats.cli.sample, "run_sample"),
        "fit": (actstats.cli.fit, "fit_store"),
        "collect": (actstats.cli.collect, "collect"),
        "report": (actstats.cli.report, "run_report"),
    }[command]
    original = getattr(*target)

    def stop(*args, **kwargs):
        calls.append(1)
        raise ActstatsError("stopped by the test")

    setattr(target[0], target[1], stop)
    try:
        base = tmp_path_factory.mktemp("opt")
        args = {
            "sample": ["sample", str(base), "--neuron", "fc8:1", "-o", str(base / "o")],
            "fit": ["fit", str(base / "s.zarr"), "-o", str(base / "m")],
            "collect": ["collect", str(base), "-o", str(base.parent / f"{base.name}.zarr")],
            "report": ["report", str(base)],
        }[command]
        res = runner.invoke(app, [*args, flag, value])
    finally:
        setattr(target[0], target[1], original)
    if res.exit_code == 2:  # typer refuses the type itself ("abc", "1.5" for an int)
        assert "Invalid value for" in res.output
        return
    number = float(value)
    if _NUMERIC[command][flag] == "int":  # typer accepts "-0.0" or "3.0" as an int
        number = int(value) if value.lstrip("-").isdigit() else int(number)
    from actstats.cli.checks import RANGES

    name = flag.lstrip("-").replace("-", "_")
    if RANGES[name].holds(number):
        assert calls == [1], res.output  # passed through to the library
    else:
        assert calls == [] and res.exit_code == 1
        assert _one_line(res.output).startswith(f"error: {flag} ")


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=20,
)


def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, (*prefix, i))


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data(), replacement=_JSON)
def test_mutated_manifests_load_or_fail_in_one_line(fitted, tmp_path_factory, data, replacement):
    manifest = _manifest(fitted)
    where = data.draw(st.sampled_from(list(_paths(manifest))[1:]))
    node = manifest
    for key in where[:-1]:
        node = node[key]
    node[where[-1]] = replacement
    copy = shutil.copytree(fitted, tmp_path_factory.mktemp("mut") / "m")
    (copy / "manifest.json").write_text(json.dumps(manifest))
    try:
        load(copy)
    except ActstatsError as exc:
        assert "\n" not in str(exc)


# --------------------------------------------------------------- one-line OS errors
@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.EACCES])
def test_os_errors_mid_run_are_one_line_and_resumable(
    tmp_path: Path, good, monkeypatch, code: int
) -> None:
    root, ref = good
    store = tmp_path / "s.zarr"
    import actstats.pipeline.collect_graph as pipeline

    original, calls = pipeline.write_chunk, []

    def failing(st_, index, *args, **kwargs):
        calls.append(index)
        if len(calls) == 2:
            raise OSError(code, os.strerror(code), f"{store}/acts/fc8/c/1/0")
        return original(st_, index, *args, **kwargs)

    monkeypatch.setattr(pipeline, "write_chunk", failing)
    res = runner.invoke(app, _collect_args(root, store, "--scheduler", "sync"))
    assert res.exit_code == 1
    line = _one_line(res.output)
    assert str(store) in line and os.strerror(code).lower()[:8] in line.lower()
    monkeypatch.setattr(pipeline, "write_chunk", original)
    res = runner.invoke(app, _collect_args(root, store))
    assert res.exit_code == 0, res.output
    _same_store(store, ref)


def test_run_spec_values_are_checked_too(tmp_path: Path, good) -> None:
    spec = tmp_path / "run.toml"
    spec.write_text(f'[collect]\nroot = "{good[0]}"\nstore = "s.zarr"\nbatch_size = {10**30}\n')
    res = runner.invoke(app, ["collect", str(spec)])
    assert res.exit_code == 1
    assert "--batch-size 10000000000000000000...: must be an integer in [1, 65536]" in res.output
    _one_line(res.output)
    spec.write_text('[fit]\ncov = "auto"\n')
    res = runner.invoke(app, ["collect", str(spec)])
    assert "has no [collect] table" in _one_line(res.output)


def test_scheduler_names_are_checked(tmp_path: Path, good) -> None:
    res = runner.invoke(
        app, ["fit", str(good[1]), "-o", str(tmp_path / "m"), "--scheduler", "bogus"]
    )
    assert res.exit_code == 1 and "--scheduler bogus: use threads" in _one_line(res.output)


# ------------------------------------------------------------------ warnings, report
def test_degenerate_classes_warn_once_each(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    acts = {"a": np.vstack([rng.normal(size=(40, 3)), np.ones((1, 3)), np.full((6, 3), 2.0)])}
    labels = np.array([0] * 40 + [1] + [2] * 6)
    store = make_store(tmp_path / "s.zarr", acts, labels, ["fine", "single", "constant"])
    with pytest.warns(DegenerateClassWarning) as caught:
        fit_store(store, None)
    messages = sorted(str(w.message) for w in caught if w.category is DegenerateClassWarning)
    assert len(messages) == 2, messages
    assert messages[0].startswith("class constant, layer a: all N=6 images give the same")
    assert messages[1].startswith("class single, layer a: N=1: no variance")


def test_report_embeds_only_files_under_the_run(tmp_path: Path) -> None:
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"TOP-SECRET-TOKEN")
    run = tmp_path / "run" / "fc8_1"
    run.mkdir(parents=True)
    hostile.png(run / "sample_000.png")
    record = {"index": 0, "seed": 0, "nll": {}, "target_history": [1.0], "target_score": 1.0}
    (run / "samples.json").write_text(
        json.dumps(
            {
                "neuron": "fc8:1", "class": "one", "method": "simonyan",
                "samples": [record | {"file": "sample_000.png"}, record | {"file": str(secret)},
                            record | {"file": "../../secret.png"}],
            }
        )
    )  # fmt: skip
    res = runner.invoke(app, ["report", str(tmp_path / "run")])
    assert res.exit_code == 0, res.output
    page = (tmp_path / "run" / "report.html").read_text()
    import base64

    assert base64.b64encode(b"TOP-SECRET-TOKEN").decode()[:12] not in page
    assert page.count("not embedded") == 2 and page.count("data:image/png") >= 1


def test_cli_messages_keep_their_brackets_and_colons(tmp_path: Path, fitted) -> None:
    res = runner.invoke(
        app,
        ["sample", str(fitted), "--neuron", "fc8:-1", "--network", FACTORY, "-o", str(tmp_path)],
    )
    line = _one_line(res.output)
    assert "fc8:-1" in line and "👎" not in line
