"""Streamed sketch moments and the memory plan, against dense numpy references."""

from __future__ import annotations

import numpy as np
import pytest

from actstats.errors import ActstatsError
from actstats.pipeline.memory import format_bytes, parse_memory, plan_moments
from actstats.stats.gaussian import fit_gaussian, moments_from_array
from actstats.stats.sketch import (
    fit_gaussian_sketch,
    merge_sketches,
    sketch_basis,
    sketch_from_array,
)


def _data(n: int = 40, d: int = 30, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(n, 3)) @ rng.normal(size=(3, d)) * 2.0
    return latent + rng.normal(size=(n, d)) * 0.3 + rng.normal(size=d)


def _streamed(X: np.ndarray, rows: int, chunk: int = 7):
    parts = [sketch_from_array(X[i : i + chunk], rows) for i in range(0, len(X), chunk)]
    while len(parts) > 1:  # a merge tree, as fit's
        parts = [
            merge_sketches(parts[i], parts[i + 1]) if i + 1 < len(parts) else parts[i]
            for i in range(0, len(parts), 2)
        ]
    return parts[0]


def test_exact_while_rows_fit_the_sketch() -> None:
    X = _data(n=25)
    m = _streamed(X, rows=64)
    dense = moments_from_array(X)
    E = X - X.mean(0)
    assert m.exact and m.n == 25
    np.testing.assert_allclose(m.mean, X.mean(0), rtol=1e-12)
    np.testing.assert_allclose(m.sketch.T @ m.sketch, E.T @ E, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(m.m2_diag, np.diagonal(dense.m2), rtol=1e-12)
    np.testing.assert_allclose(m.t3, dense.t3, rtol=1e-9)
    assert m.q4 == pytest.approx(dense.q4, rel=1e-9)


def test_frequent_directions_bound_when_shrunk() -> None:
    X = _data(n=200, d=30)
    rows = 8
    m = _streamed(X, rows=rows)
    E = X - X.mean(0)
    C = E.T @ E
    err = C - m.sketch.T @ m.sketch
    eig = np.linalg.eigvalsh(err)
    assert eig.min() > -1e-6 * np.abs(C).max()  # the sketch never overstates the scatter
    k = 3
    tail = np.sort(np.linalg.eigvalsh(C))[::-1][k:].sum()
    assert eig.max() <= tail / (rows - k) * (1 + 1e-9)  # Liberty's bound
    np.testing.assert_allclose(m.m2_diag, np.diagonal(C), rtol=1e-10)  # diagonal stays exact


def test_sketch_fit_equals_the_dense_low_rank_fit_when_exact() -> None:
    X = _data(n=30)
    dense = fit_gaussian(moments_from_array(X), cov="lowrank:4")
    sk = fit_gaussian_sketch(_streamed(X, rows=64), rank=4)
    assert sk.cov_type_ == dense.cov_type_ == "lowrank"
    assert sk.shrinkage_ == pytest.approx(dense.shrinkage_, rel=1e-8)
    np.testing.assert_allclose(sk.get_covariance(), dense.get_covariance(), rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(sk.score_samples(X), dense.score_samples(X), rtol=1e-7)
    _, basis = sketch_basis(_streamed(X, rows=64), 3)
    E = X - X.mean(0)
    top = np.linalg.eigh(E.T @ E)[1][:, ::-1][:, :3]
    np.testing.assert_allclose(np.abs(basis.T @ top), np.eye(3), atol=1e-8)


def test_memory_sizes_parse() -> None:
    assert parse_memory("4GB") == 4 * 2**30 and parse_memory("512MiB") == 512 * 2**20
    assert parse_memory("1.5g") == int(1.5 * 2**30) and parse_memory("1000") == 1000
    assert format_bytes(1536) == "1.5 KiB"
    with pytest.raises(ActstatsError, match=r"--memory 'lots': use a size such as 4GB"):
        parse_memory("lots")


def test_plan_never_allocates_a_dense_vit_block() -> None:
    dims = {"conv_proj": 3072, "encoder.layers.encoder_layer_5": 151296, "heads": 1000}
    plan = plan_moments(dims, cov="auto", n_groups=3, memory=parse_memory("4GB"), threads=2)
    assert plan.forms == {
        "conv_proj": "dense",
        "encoder.layers.encoder_layer_5": "diag",
        "heads": "dense",
    }
    assert plan.bytes_needed <= parse_memory("4GB")
    (note,) = plan.notes
    assert "encoder_layer_5 (D=151,296)" in note and "170.5 GiB" in note and "diagonal" in note
    roomy = plan_moments(dims, cov="auto", n_groups=3, memory=parse_memory("64GB"), threads=2)
    assert roomy.forms["encoder.layers.encoder_layer_5"] == "sketch"
    assert "low-rank(64) + diagonal" in roomy.notes[0]
    with pytest.raises(ActstatsError, match=r"--cov full: the fit needs about .*170.5 GiB per"):
        plan_moments(dims, cov="full", n_groups=3, memory=parse_memory("4GB"), threads=2)
    with pytest.raises(ActstatsError, match=r"--cov auto: the fit needs about"):
        plan_moments(dims, cov="auto", n_groups=3, memory=parse_memory("10MB"), threads=2)
