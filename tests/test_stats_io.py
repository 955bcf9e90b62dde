"""Model directories: exact round trip, and every kind of tampering refused."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from actstats.errors import ActstatsError
from actstats.io.locks import lock_path
from actstats.io.modelfile import MAX_MANIFEST_DEPTH, check_model_output, save_models
from actstats.io.modelfile import load_models as load
from actstats.pipeline.fit import fit_store

sys.path.insert(0, str(Path(__file__).parent))
from _store_factory import linear_chain, make_store


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    d = tmp_path_factory.mktemp("io")
    acts, labels, names = linear_chain(60)
    make_store(d / "s.zarr", acts, labels, names)
    fit_store(d / "s.zarr", d / "m", mixture="2", cov="lowrank:2")
    return d / "m"


def _copy(saved: Path, tmp_path: Path) -> Path:
    import shutil

    return Path(shutil.copytree(saved, tmp_path / "m"))


def _manifest(path: Path) -> dict:
    return json.loads((path / "manifest.json").read_text())


def test_round_trip_exact(saved, tmp_path):
    m = load(saved)
    save_models(m, tmp_path / "again")
    m2 = load(tmp_path / "again")
    assert m2.classes == m.classes == ["cat", "dog", "__all__"]
    assert m2.layers == ["a", "b", "c"] and m2.provenance == m.provenance
    for c in m.classes:
        assert sorted(m2[c].joints) == sorted(m[c].joints) == [("a", "b"), ("b", "c")]
        pairs = [(m[c].gaussian(ly), m2[c].gaussian(ly)) for ly in m.layers]
        pairs += [(m[c].mixture(ly), m2[c].mixture(ly)) for ly in m.layers]
        pairs += [(m[c].joints[k], m2[c].joints[k]) for k in m[c].joints]
        for a, b in pairs:
            sa, sb = a.to_state(), b.to_state()
            assert sa[0] == sb[0]
            for k in sa[1]:
                np.testing.assert_array_equal(sa[1][k], sb[1][k])
    x = np.ones((2, 5))
    np.testing.assert_array_equal(m["cat"]["a"].score_samples(x), m2["cat"]["a"].score_samples(x))
    prov = m.provenance
    assert prov["model"] == "toy" and prov["class_names"] == ["cat", "dog"]
    assert prov["fit"]["cov"] == "lowrank:2" and "actstats_version" in prov


def _entry_file(path: Path, name: str = "mean") -> tuple[dict, Path]:
    man = _manifest(path)
    meta = man["entries"][0]["arrays"][name]
    return man, path / meta["file"]


def test_corrupt_manifest_refused(saved, tmp_path):
    p = _copy(saved, tmp_path)
    (p / "manifest.json").write_text("{not json")
    with pytest.raises(ActstatsError, match=r"manifest\.json is not valid JSON"):
        load(p)


def test_schema_violation_names_the_field(saved, tmp_path):
    p = _copy(saved, tmp_path)
    man = _manifest(p)
    man["entries"][0]["kind"] = "pickle"
    (p / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(ActstatsError, match="field entries/0/kind fails the manifest schema"):
        load(p)


def test_missing_array_refused(saved, tmp_path):
    p = _copy(saved, tmp_path)
    _, f = _entry_file(p)
    f.unlink()
    with pytest.raises(ActstatsError, match=r"array file .*mean\.npy is missing"):
        load(p)


def test_changed_byte_refused(saved, tmp_path):
    p = _copy(saved, tmp_path)
    _, f = _entry_file(p)
    data = bytearray(f.read_bytes())
    data[-1] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(ActstatsError, match="does not match its sha256"):
        load(p)


def _replace(p: Path, arr_bytes_writer, name: str = "mean") -> None:
    man, f = _entry_file(p, name)
    arr_bytes_writer(f)
    man["entries"][0]["arrays"][name]["sha256"] = hashlib.sha256(
        f.read_bytes()
    ).hexdigest()  # a forger also fixes the hash
    (p / "manifest.json").write_text(json.dumps(man))


def test_pickle_inside_refused(saved, tmp_path):
    p = _copy(saved, tmp_path)
    _replace(p, lambda f: np.save(f, np.array([{"x": 1}], dtype=object), allow_pickle=True))
    with pytest.raises(ActstatsError, match=r"holds Python objects \(pickle\); refused"):
        load(p)


def test_wrong_shape_refused(saved, tmp_path):
    p = _copy(saved, tmp_path)
    _replace(p, lambda f: np.save(f, np.zeros(7)))
    with pytest.raises(ActstatsError, match=r"has shape \[7\]; the manifest says \[5\]"):
        load(p)


def test_truncated_file_refused(saved, tmp_path):
    p = _copy(saved, tmp_path)
    _replace(p, lambda f: f.write_bytes(f.read_bytes()[:60]))
    with pytest.raises(ActstatsError, match="cannot be read"):
        load(p)


def test_missing_dir_and_overwrite(saved, tmp_path):
    with pytest.raises(ActstatsError, match="is not a model directory"):
        load(tmp_path / "nope")
    with pytest.raises(ActstatsError, match="exists; pass --overwrite"):
        save_models(load(saved), saved)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "thesis.tex").write_text("years of work")
    with pytest.raises(ActstatsError, match=r"not \(only\) an actstats model directory"):
        save_models(load(saved), tmp_path / "junk", overwrite=True)
    # a valid manifest beside someone's file: still not ours to delete
    shutil.copy(saved / "manifest.json", tmp_path / "junk" / "manifest.json")
    with pytest.raises(ActstatsError, match=r"holds thesis.tex\); refusing to replace it"):
        save_models(load(saved), tmp_path / "junk", overwrite=True)
    assert (tmp_path / "junk" / "thesis.tex").read_text() == "years of work"
    (tmp_path / "empty").mkdir()
    save_models(load(saved), tmp_path / "empty")  # an empty folder is filled
    assert load(tmp_path / "empty").classes == load(saved).classes


def test_array_path_outside_the_directory_refused(saved, tmp_path):
    """A forged manifest points at a well-formed .npy beside the model, hash and all."""
    p = _copy(saved, tmp_path)
    man, f = _entry_file(p)
    outside = tmp_path / "elsewhere.npy"
    outside.write_bytes(f.read_bytes())
    meta = man["entries"][0]["arrays"]["mean"]
    meta["file"] = "arrays/../../elsewhere.npy"  # matches the schema's file pattern
    (p / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(
        ActstatsError, match=r"array file arrays/\.\./\.\./elsewhere\.npy lies outside"
    ):
        load(p)
    meta["file"] = "arrays/../" + str(f.relative_to(p))  # a detour that stays inside loads
    (p / "manifest.json").write_text(json.dumps(man))
    np.testing.assert_array_equal(
        load(p)["cat"].gaussian("a").mean_, load(saved)["cat"].gaussian("a").mean_
    )


def test_wrong_dtype_refused(saved, tmp_path):
    p = _copy(saved, tmp_path)
    _, f = _entry_file(p)
    _replace(p, lambda g: np.save(g, np.load(f).astype(np.float32)))
    with pytest.raises(ActstatsError, match=r"has dtype <f4; the manifest says <f8"):
        load(p)


def test_returned_path_type_and_no_leftovers(saved, tmp_path):
    """A local path gives a Path back, a URL the URL; replacing leaves no old copy."""
    models = load(saved)
    out = tmp_path / "m"
    assert save_models(models, out) == out
    url = f"file://{tmp_path}/u"
    assert save_models(models, url) == url
    assert save_models(models, out, overwrite=True) == out
    assert sorted(p.name for p in tmp_path.iterdir()) == [".m.lock", ".u.lock", "m", "u"]


def test_overwrite_on_an_object_store(saved):
    """memory:// lists entries with details unless asked not to: replacing must still work."""
    models = load(saved)
    url = "memory://actstats-test-overwrite/m"
    save_models(models, url)
    save_models(models, url, overwrite=True)
    assert load(url).classes == models.classes


def test_check_model_output_names_the_path(saved, tmp_path):
    check_model_output(tmp_path / "new", overwrite=False)  # nothing there: fine
    with pytest.raises(ActstatsError, match=rf"^{saved} exists; pass --overwrite"):
        check_model_output(saved, overwrite=False)
    check_model_output(saved, overwrite=True)
    junk = tmp_path / "junk"
    junk.mkdir()
    for name in ("a.txt", "b.txt", "c.txt", "d.txt"):
        (junk / name).write_text("mine")
    with pytest.raises(ActstatsError, match=r"\(holds a\.txt, b\.txt, c\.txt\); refusing"):
        check_model_output(junk, overwrite=True)


def test_busy_lock_names_the_model_directory(saved, tmp_path):
    out = tmp_path / "m"
    fd = os.open(lock_path(out), os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(ActstatsError, match=rf"^model directory {out}: another writer"):
            save_models(load(saved), out)
    finally:
        os.close(fd)


def test_recovery_puts_back_the_newest_old_copy(saved, tmp_path):
    """Killed between moving two generations aside and the new one in: the newest returns."""
    for name, mtime, marker in (
        ("aaaa", 2_000_000_000, "newest"),
        ("zzzz", 1_000_000_000, "oldest"),
    ):
        old = Path(shutil.copytree(saved, tmp_path / f".m.actstats-old-{name}"))
        (old / "arrays" / "marker").write_text(marker)
        os.utime(old, (mtime, mtime))
    with pytest.raises(ActstatsError, match="exists; pass --overwrite"):
        check_model_output(tmp_path / "m", overwrite=False)
    assert (tmp_path / "m" / "arrays" / "marker").read_text() == "newest"
    assert not list(tmp_path.glob(".m.actstats-old-*"))


@pytest.mark.parametrize("name", ["runX", "run ", "run/"])
def test_any_directory_name_round_trips(saved, tmp_path, name):
    """The inside-the-directory check must not trim the directory's own name."""
    out = save_models(load(saved), f"{tmp_path}/{name}")
    assert load(out).classes == load(saved).classes


def test_missing_array_message_names_the_directory(saved, tmp_path):
    p = _copy(saved, tmp_path)
    _entry_file(p)[1].unlink()
    with pytest.raises(ActstatsError, match=rf"is missing from {p}; refit the models"):
        load(p)


def _naive_depth(value) -> int:
    """Nesting depth of dicts and lists, recursively (the manifest itself is level 1)."""
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list):
        return 1 + max((_naive_depth(v) for v in value), default=0)
    return 0


@pytest.mark.parametrize("extra", [0, 1, 30])
def test_manifest_nesting_limit(saved, tmp_path, extra):
    """A manifest nested exactly MAX_MANIFEST_DEPTH deep loads; one level more is refused."""
    p = _copy(saved, tmp_path)
    man = _manifest(p)
    assert _naive_depth(man) < MAX_MANIFEST_DEPTH
    deep: list = []
    for _ in range(MAX_MANIFEST_DEPTH + extra - 4):  # manifest > provenance > fit > [..[]..]
        deep = [deep]
    man["provenance"]["fit"]["deep"] = deep
    assert _naive_depth(man) == MAX_MANIFEST_DEPTH + extra
    (p / "manifest.json").write_text(json.dumps(man))
    if extra == 0:
        assert load(p).classes == load(saved).classes
    else:
        with pytest.raises(ActstatsError, match=r"nested deeper than 32 levels; refused"):
            load(p)
