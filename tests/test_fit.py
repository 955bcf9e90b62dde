"""``fit_store`` and ``actstats fit`` on small stores built with plain zarr."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr
from typer.testing import CliRunner

import actstats.cli
from actstats.errors import ActstatsError
from actstats.io.modelfile import load_models as load
from actstats.pipeline import fit_tasks
from actstats.pipeline.fit import fit_store
from actstats.stats.histogram import histogram_quantiles

sys.path.insert(0, str(Path(__file__).parent))
from _store_factory import linear_chain, make_store

ACTS, LABELS, NAMES = linear_chain(100)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    ok = np.ones(len(LABELS), dtype=bool)
    ok[[3, 150]] = False
    acts = {k: v.copy() for k, v in ACTS.items()}
    acts["a"][3] = 1e6  # a bad row that must be ignored
    return make_store(tmp_path_factory.mktemp("fit") / "s.zarr", acts, LABELS, NAMES, ok=ok), ok


@pytest.mark.parametrize("piece_bytes", [fit_tasks.PIECE_BYTES, 1])  # 1: a chunk per piece
@pytest.mark.parametrize("chunk", [7, 32, 500])
def test_moments_equal_numpy_for_chunkings(tmp_path, monkeypatch, chunk, piece_bytes):
    monkeypatch.setattr(fit_tasks, "PIECE_BYTES", piece_bytes)
    ok = np.ones(len(LABELS), dtype=bool)
    ok[::9] = False
    s = make_store(tmp_path / "s.zarr", ACTS, LABELS, NAMES, ok=ok, chunk_size=chunk)
    res = fit_store(s, None, cov="full:empirical", holdout=0.0, scheduler="sync")
    for key, rows in (("cat", (LABELS == 0) & ok), ("dog", (LABELS == 1) & ok), ("__all__", ok)):
        for layer, X in ACTS.items():
            g = res.models[key].gaussian(layer)
            X = X[rows].astype(np.float32).astype(np.float64)
            assert g.n_samples_ == len(X)
            np.testing.assert_allclose(g.mean_, X.mean(0), rtol=1e-10, atol=1e-12)
            cov = g.covariance_ - g.var_floor_ * np.eye(X.shape[1])
            np.testing.assert_allclose(cov, np.cov(X.T, ddof=0), rtol=1e-9, atol=1e-10)
            # histogram quantiles: within one bin of the order statistics around each level
            width = (X.max(0) - X.min(0)) / 256
            for q, row in zip(g.quantile_levels_, g.quantiles_, strict=True):
                lo = np.quantile(X, max(q - 1 / len(X), 0), axis=0, method="lower") - width
                hi = np.quantile(X, min(q + 1 / len(X), 1), axis=0, method="higher") + width
                assert np.all((lo - 1e-9 <= row) & (row <= hi + 1e-9)), (key, layer, q)


def test_fit_models_and_conditionals(store, tmp_path):
    path, ok = store
    res = fit_store(path, tmp_path / "m", seed=0)
    m = load(tmp_path / "m")
    assert m.classes == ["cat", "dog", "__all__"] and m.layers == ["a", "b", "c"]
    g = m["cat"]["c"]
    assert np.all(np.isfinite(g.score_samples(ACTS["c"][:5])))  # constant unit c[:, 3]
    rows = {(r["class"], r["layer"]): r for r in res.rows}
    assert rows[("cat", "a")]["holdout_n"] == 9 and np.isfinite(
        rows[("cat", "a")]["holdout_ll_per_dim"]
    )
    # p(a | b) in full-rank bases equals the Schur complement of the joint covariance
    sel = (LABELS == 0) & ok
    exact = fit_store(path, None, holdout=0.0, layers=["a", "b"], classes=["cat"]).models
    cond = exact["cat"].conditional("a", given="b")
    Y = np.hstack([ACTS["a"][sel], ACTS["b"][sel]]).astype(np.float32).astype(np.float64)
    pred = cond.mean(Y[:4, 5:])
    design = np.hstack([Y[:, 5:], np.ones((len(Y), 1))])
    coef = np.linalg.lstsq(design, Y[:, :5], rcond=None)[0]
    np.testing.assert_allclose(pred, design[:4] @ coef, atol=1e-4)  # up to the joint's ridge
    assert cond.sample(Y[:4, 5:], random_state=0).shape == (4, 5)
    unit = m["cat"].conditional("c", given=("c", 1)).sample([0.5, 1.0], random_state=0)
    np.testing.assert_allclose(unit[:, 1], [0.5, 1.0])
    assert m["cat"].conditional("b", given=("c", 0)).mean([0.0]).shape == (1, 3)
    with pytest.raises(ActstatsError, match="no joint model of a and c"):
        m["cat"].conditional("a", given="c")
    with pytest.raises(ActstatsError, match=r"no models for class 'bird'; available: cat, dog"):
        m["bird"]
    with pytest.raises(ActstatsError, match=r"class 'cat' has no model of layer 'zz'; available"):
        m["cat"].gaussian("zz")
    with pytest.raises(ActstatsError, match=r"has no mixture for layer 'a'; fit with --mixture K"):
        m["cat"].mixture("a")


def test_mixture_and_wide_forms(store):
    path, _ = store
    res = fit_store(
        path, None, cov="lowrank:2", mixture="auto", layers=["a", "b"], classes=["dog"], basis_dim=2
    )
    m = res.models
    assert m.classes == ["dog", "__all__"] and m.layers == ["a", "b"]
    mix = m["dog"]["a"]
    assert mix.basis_.shape == (5, 2) and mix.kind == "mixture"
    assert m["dog"].gaussian("a").cov_type_ == "lowrank"
    assert np.all(np.isfinite(mix.score_samples(ACTS["a"][:3])))
    assert m["dog"].conditional("a", given="b").sample(ACTS["b"][:2], random_state=1).shape == (
        2,
        5,
    )
    d = fit_store(path, None, cov="diag", layers=["a"]).models["cat"]["a"]
    assert d.cov_type_ == "diag"


def test_histogram_quantiles_constant_and_uniform():
    counts = np.array([[0, 10, 0, 0], [5, 5, 5, 5]])
    q = histogram_quantiles(counts, np.array([2.0, 0.0]), np.array([2.0, 4.0]), [0.5])
    np.testing.assert_allclose(q, [[2.0, 2.0]])


def test_errors(store, tmp_path):
    path, _ = store
    with pytest.raises(ActstatsError, match="layer\\(s\\) zz not in the store; stored: a, b, c"):
        fit_store(path, None, layers=["zz"])
    with pytest.raises(ActstatsError, match="class\\(es\\) bird not in the store"):
        fit_store(path, None, classes=["bird"])
    with pytest.raises(ActstatsError, match="not a readable activation store"):
        fit_store(tmp_path / "nothing.zarr", None)
    zarr.open_group(str(tmp_path / "bare.zarr"), mode="w")
    with pytest.raises(ActstatsError, match=r"attrs\['actstats'\] is missing; run `actstats"):
        fit_store(tmp_path / "bare.zarr", None)
    meta = {"layers": [], "class_names": [], "chunk_size": 1}
    zarr.open_group(str(tmp_path / "bare.zarr"), mode="w").attrs["actstats"] = meta
    with pytest.raises(ActstatsError, match=r"array .*images/label.* is missing; re-run"):
        fit_store(tmp_path / "bare.zarr", None)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    with pytest.raises(ActstatsError, match="exists; pass --overwrite"):
        fit_store(path, tmp_path / "out")
    with pytest.raises(ActstatsError, match=r"-o .*: overlaps the source folder"):
        fit_store(path, path / "models", overwrite=True)
    path = shutil.copytree(path, tmp_path / "cut.zarr")  # the fixture is shared
    g = zarr.open_group(str(path), mode="r+")
    g.attrs["actstats"] = dict(g.attrs["actstats"]) | {"complete": False}
    g["images/done"][0] = False
    with pytest.raises(
        ActstatsError, match=r"incomplete \(\d+ of \d+ chunks written.*--allow-incomplete"
    ):
        fit_store(path, None)
    assert fit_store(path, None, allow_incomplete=True).rows


def _invoke(args: list[str]):
    app = actstats.cli.app
    if len(app.registered_commands) > 1:  # a one-command typer app has no command name
        args = ["fit", *args]
    return CliRunner().invoke(app, args)


def test_cli(store, tmp_path, monkeypatch):
    path, _ = store
    r = _invoke([str(path), "-o", str(tmp_path / "m"), "--layer", "a", "--cov", "diag"])
    assert r.exit_code == 0, r.output
    assert "held-out LL/dim" in r.output and "__all__" in r.output
    assert load(tmp_path / "m").layers == ["a"]
    r = _invoke([str(path), "-o", str(tmp_path / "m"), "--mixture", "lots"])
    assert r.exit_code == 1 and "--mixture 'lots' is not understood" in r.output
    calls = {}
    import actstats.cli.fit as cli_fit
    from actstats.pipeline.fit import FitResult

    def fake(*args, **kwargs):
        calls.update(kwargs, args=args)
        return FitResult(load(tmp_path / "m"), tmp_path / "m", [])

    monkeypatch.setattr(cli_fit, "fit_store", fake)
    r = _invoke(
        [
            str(path),
            "-o",
            "x",
            "--class",
            "cat",
            "--scheduler",
            "sync",
            "--seed",
            "3",
            "--overwrite",
            "--mixture",
            "auto",
            "--cov",
            "lowrank:8",
        ]
    )
    assert r.exit_code == 0, r.output
    assert calls["classes"] == ["cat"] and calls["scheduler"] == "sync" and calls["seed"] == 3
    assert calls["overwrite"] and calls["mixture"] == "auto" and calls["cov"] == "lowrank:8"


def test_take_rows_is_a_view_only_for_one_contiguous_run():
    X = np.arange(20.0).reshape(10, 2)
    for rows in ([2, 3, 4], [0, 1, 4], [0, 2], [7], []):
        r = np.asarray(rows, dtype=np.int64)
        np.testing.assert_array_equal(fit_tasks.take_rows(X, r), X[r])
    assert np.shares_memory(fit_tasks.take_rows(X, np.array([2, 3, 4])), X)
