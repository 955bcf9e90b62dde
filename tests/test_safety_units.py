"""Locks, safe paths, stored names, option ranges and one-line errors, each alone."""

from __future__ import annotations

import errno
import math
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import _hostile as hostile
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from actstats.cli.checks import RANGES, check_options, flag_name
from actstats.errors import ActstatsError, os_error
from actstats.io.locks import lock_path, writer_lock
from actstats.io.paths import (
    decode_name,
    encode_name,
    overlaps,
    read_regular_file,
    refuse_overlap,
    show_name,
)


# ------------------------------------------------------------------------------- locks
def test_second_writer_is_refused_naming_the_holder(tmp_path: Path) -> None:
    target = tmp_path / "store.zarr"
    errors: list[str] = []

    def second_writer() -> None:
        try:
            with writer_lock(target, "store"):
                errors.append("")
        except ActstatsError as exc:
            errors.append(str(exc))

    with writer_lock(target, "store"), writer_lock(target, "store"):  # re-entrant in a thread
        thread = threading.Thread(target=second_writer)
        thread.start()
        thread.join()
    assert re.match(
        rf"store .*store.zarr: another writer holds it \(pid {os.getpid()} on ", errors[0]
    )
    assert errors[0].endswith("wait for it to finish or stop it, then rerun")
    with writer_lock(target, "store"):  # released on exit
        pass
    assert lock_path(target) == tmp_path / ".store.zarr.lock"
    assert lock_path("s3://bucket/x.zarr") is None


def test_waiting_writer_runs_after_the_holder(tmp_path: Path) -> None:
    """``wait=True`` (the demo cache) blocks until the holder leaves, then runs."""
    target = tmp_path / "demo-v1"
    order: list[str] = []
    entered = threading.Event()

    def waiter() -> None:
        entered.set()
        with writer_lock(target, "demo cache", wait=True):
            order.append("waiter")

    with writer_lock(target, "demo cache"):
        thread = threading.Thread(target=waiter)
        thread.start()
        entered.wait()
        thread.join(timeout=0.3)
        assert thread.is_alive()  # still waiting for the lock this thread holds
        order.append("holder")
    thread.join(timeout=10)
    assert order == ["holder", "waiter"]


_HOLD = """
import sys, time
from actstats.io.locks import writer_lock
with writer_lock(sys.argv[1], "store"):
    print("held", flush=True)
    time.sleep(60)
"""


def test_a_killed_holder_leaves_no_stale_lock(tmp_path: Path) -> None:
    target = tmp_path / "models"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(target)], stdout=subprocess.PIPE, env=env, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "held"
        with (
            pytest.raises(ActstatsError, match=rf"pid {proc.pid} on "),
            writer_lock(target, "model directory"),
        ):
            pass
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with writer_lock(target, "model directory"):  # the kernel dropped the dead holder's lock
        pass


def test_lock_in_an_unwritable_folder_is_one_line(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root writes anywhere")
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with (
            pytest.raises(ActstatsError, match=r"ro: permission denied; check its permissions"),
            writer_lock(folder / "store.zarr", "store"),
        ):
            pass
    finally:
        folder.chmod(0o700)


# ------------------------------------------------------------------------------- paths
def test_overlap_in_every_direction(tmp_path: Path) -> None:
    src = tmp_path / "data"
    (src / "cat").mkdir(parents=True)
    assert overlaps(src, src) and overlaps(src / "cat" / "x.zarr", src) and overlaps(tmp_path, src)
    assert not overlaps(tmp_path / "data2", src)
    os.symlink(src, tmp_path / "alias")
    assert overlaps(tmp_path / "alias" / "out.zarr", src)  # symlinks resolved
    with pytest.raises(ActstatsError, match=r"-o .*: overlaps the source folder"):
        refuse_overlap(src / "s.zarr", src, "-o")
    refuse_overlap(tmp_path / "elsewhere.zarr", src, "-o")
    refuse_overlap("s3://bucket/s.zarr", src, "-o")


def test_read_regular_file_refuses_every_special_file(tmp_path: Path) -> None:
    (tmp_path / "arrays").mkdir()
    (tmp_path / "arrays" / "ok.npy").write_bytes(b"12345")
    assert read_regular_file(tmp_path, "arrays/ok.npy", 5) == b"12345"
    hostile.dev_zero(tmp_path / "arrays", "zero.npy")
    hostile.fifo(tmp_path / "arrays", "pipe.npy")
    hostile.symlink_loop(tmp_path / "arrays")
    os.symlink(tmp_path / "arrays", tmp_path / "linked")
    (tmp_path / "secret").write_text("x")
    cases = {
        "arrays/zero.npy": "symlink",
        "arrays/pipe.npy": "not a regular file",
        "arrays/loop.png": "symlink",
        "linked/ok.npy": "symlink",
        "../secret": "outside the folder",
        "/etc/passwd": "outside the folder",
        "arrays/ok.npy/x": "symlink or non-folder",
    }
    for rel, why in cases.items():
        with pytest.raises(ActstatsError, match=why):
            read_regular_file(tmp_path, rel, 100)
    with pytest.raises(FileNotFoundError):
        read_regular_file(tmp_path, "arrays/missing.npy", 100)
    with pytest.raises(ActstatsError, match=r"5 bytes, more than the 4"):
        read_regular_file(tmp_path, "arrays/ok.npy", 4)


@given(st.binary(min_size=1, max_size=40).filter(lambda b: b"/" not in b and b"\0" not in b))
def test_any_file_name_round_trips_through_the_store_text(raw: bytes) -> None:
    name = "cls/" + os.fsdecode(raw)
    stored = encode_name(name)
    stored.encode("utf-8")  # zarr can hold it
    assert decode_name(stored) == name
    assert os.fsencode(decode_name(stored)) == b"cls/" + raw
    assert "\n" not in show_name(stored) or b"\n" in raw


def test_latin1_name_reads_as_itself() -> None:
    name = os.fsdecode(b"cls/caf\xe9.jpg")
    assert encode_name(name) == "\0cls/café.jpg"
    assert show_name(encode_name(name)) == "cls/caf\\xe9.jpg"
    assert encode_name("cls/café.jpg") == "cls/café.jpg"  # valid UTF-8 is stored as is


# ----------------------------------------------------------------------------- options
_VALUES = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, 1, -1, 2**32, 2**32 - 1, 0.0, 1e-300, math.nan, math.inf]),
)


@settings(max_examples=300)
@given(name=st.sampled_from(sorted(RANGES)), value=_VALUES)
def test_check_options_accepts_exactly_the_finite_values_in_range(name: str, value) -> None:
    r = RANGES[name]
    expected = (
        (isinstance(value, int) or not r.integer)
        and math.isfinite(value)
        and (value > r.lo if r.lo_open else value >= r.lo)
        and value <= r.hi
    )
    if expected:
        check_options(**{name: value})
    else:
        with pytest.raises(ActstatsError) as info:
            check_options(**{name: value})
        message = str(info.value)
        assert message.startswith(flag_name(name) + " ") and "\n" not in message
        assert len(message) < 120


# ------------------------------------------------------------------------ error lines
@pytest.mark.parametrize(
    ("code", "words"),
    [
        (errno.EACCES, "permission denied"),
        (errno.EROFS, "read-only file system; choose a writable location"),
        (errno.ENOSPC, "no space left on device; free some space, then rerun"),
        (errno.ENOENT, "no such file or folder"),
        (errno.EEXIST, "already exists"),
        (errno.ENOTDIR, "a file stands where a folder belongs"),
    ],
)
def test_os_errors_become_one_line_naming_the_path(code: int, words: str) -> None:
    exc = OSError(code, os.strerror(code), "/data/out.zarr/acts/c/0")
    assert str(os_error(exc, "/data/out.zarr")).startswith(f"/data/out.zarr: {words}")
    assert str(os_error(exc)).startswith(f"/data/out.zarr/acts/c/0: {words}")


def test_cli_errors_print_markup_and_emoji_codes_literally(tmp_path: Path) -> None:
    from actstats.cli import app

    (tmp_path / "models").mkdir()
    result = CliRunner().invoke(
        app, ["sample", str(tmp_path / "models"), "--neuron", "fc8:-1:", "-o", str(tmp_path / "o")]
    )
    assert result.exit_code == 1
    line = result.output.strip()
    assert line.count("\n") == 0 and "👎" not in line


def test_cli_prints_bracketed_words(capsys: pytest.CaptureFixture[str]) -> None:
    from actstats.cli.app import print_error

    print_error("run spec x.toml: has no [collect] table :-1:")
    err = capsys.readouterr().err
    assert "[collect]" in err and ":-1:" in err and "👎" not in err


def test_write_atomic_replaces_whole_files_and_leaves_no_temporary(tmp_path) -> None:
    from actstats.io.paths import write_atomic

    target = tmp_path / "record.json"
    target.write_text("old")
    write_atomic(target, '{"new": 1}')
    assert target.read_text() == '{"new": 1}'
    write_atomic(target, b"\x00bytes")
    assert target.read_bytes() == b"\x00bytes"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["record.json"]
