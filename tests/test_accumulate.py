"""The fused moment kernel equals numpy on the same rows, however they are blocked."""

from __future__ import annotations

import numpy as np
import pytest

import actstats.stats.accumulate as accumulate
from actstats.stats.accumulate import MomentAccumulator
from actstats.stats.gaussian import ledoit_wolf_shrinkage_from_moments


@pytest.mark.parametrize("diag_only", [False, True])
@pytest.mark.parametrize("split", [1, 7, 300])
def test_accumulator_equals_numpy(monkeypatch, diag_only, split):
    monkeypatch.setattr(accumulate, "BLOCK_BYTES", 8 * 5 * 64)  # 256-row blocks inside add
    rng = np.random.default_rng(0)
    X = (rng.standard_normal((1000, 5)) @ rng.standard_normal((5, 5)) * 3 + 100).astype(np.float32)
    acc = MomentAccumulator(5, diag_only=diag_only)
    for part in np.array_split(X, split):
        acc.add(part)
    m = acc.moments()
    X64 = X.astype(np.float64)
    E = X64 - X64.mean(0)
    assert m.n == 1000
    np.testing.assert_allclose(m.mean, X64.mean(0), rtol=1e-13)
    np.testing.assert_array_equal(m.vmin, X.min(0))
    np.testing.assert_array_equal(m.vmax, X.max(0))
    if diag_only:
        np.testing.assert_allclose(m.m2, (E * E).sum(0), rtol=1e-11)
        return
    np.testing.assert_allclose(m.covariance(ddof=1), np.cov(X64, rowvar=False), rtol=1e-11)
    sq = (E * E).sum(1)
    np.testing.assert_allclose(m.t3, sq @ E, rtol=1e-9, atol=1e-9 * np.abs(sq @ E).max())
    np.testing.assert_allclose(m.q4, sq @ sq, rtol=1e-11)
    from sklearn.covariance import ledoit_wolf_shrinkage

    assert ledoit_wolf_shrinkage_from_moments(m) == pytest.approx(
        ledoit_wolf_shrinkage(X64, assume_centered=False), rel=1e-9
    )


def test_accumulator_follows_a_drifting_mean(monkeypatch):
    """Blocks far apart (each centred at the running mean, not its own) still match numpy."""
    monkeypatch.setattr(accumulate, "BLOCK_BYTES", 8 * 4 * 64)
    rng = np.random.default_rng(3)
    parts = [rng.standard_normal((300, 4)) * s + off for s, off in ((1, 1e4), (5, -3e3), (0.1, 0))]
    X = np.concatenate(parts)
    acc = MomentAccumulator(4)
    for part in parts:
        acc.add(part)
    m = acc.moments()
    E = X - X.mean(0)
    np.testing.assert_allclose(m.mean, X.mean(0), rtol=1e-12)
    np.testing.assert_allclose(m.covariance(ddof=1), np.cov(X, rowvar=False), rtol=1e-9)
    sq = (E * E).sum(1)
    np.testing.assert_allclose(m.t3, sq @ E, rtol=1e-8, atol=1e-8 * np.abs(sq @ E).max())
    np.testing.assert_allclose(m.q4, sq @ sq, rtol=1e-9)


def test_accumulator_rejects_wrong_width():
    with pytest.raises(ValueError, match="3 columns"):
        MomentAccumulator(3).add(np.zeros((2, 4)))


def test_accumulator_takes_the_exact_path_only_for_far_blocks(monkeypatch):
    """Blocks near the shift K use the shifted sums; a block many sds away merges exactly."""
    monkeypatch.setattr(accumulate, "BLOCK_BYTES", 8 * 3 * 64)  # 256-row blocks
    rng = np.random.default_rng(5)
    near = [rng.standard_normal((256, 3)) + off for off in (0.0, 1.0, -1.0)]  # within 2 sd
    far = rng.standard_normal((256, 3)) * 0.5 + 50.0
    exact = []
    original = MomentAccumulator._merge_exact
    monkeypatch.setattr(
        MomentAccumulator, "_merge_exact", lambda self, X: exact.append(len(X)) or original(self, X)
    )
    acc = MomentAccumulator(3)
    for part in near:
        acc.add(part)
    assert exact == []
    acc.add(far)
    assert exact == [256]
    acc.add(far + 0.1)  # K is now the merged mean 12.5, sd ~22: 1.7 sds away, shifted path
    assert exact == [256]
    X = np.concatenate([*near, far, far + 0.1])
    m = acc.moments()
    E = X - X.mean(0)
    np.testing.assert_allclose(m.mean, X.mean(0), rtol=1e-12)
    np.testing.assert_allclose(m.m2, E.T @ E, rtol=1e-10)
    sq = (E * E).sum(1)
    np.testing.assert_allclose(m.t3, sq @ E, rtol=1e-9, atol=1e-9 * np.abs(sq @ E).max())
    np.testing.assert_allclose(m.q4, sq @ sq, rtol=1e-10)


def test_diagonal_accumulator_takes_the_exact_path_for_far_blocks(monkeypatch):
    monkeypatch.setattr(accumulate, "BLOCK_BYTES", 8 * 3 * 64)
    rng = np.random.default_rng(6)
    parts = [rng.standard_normal((256, 3)), rng.standard_normal((256, 3)) + 1e5]
    acc = MomentAccumulator(3, diag_only=True)
    for part in parts:
        acc.add(part)
    X = np.concatenate(parts)
    E = X - X.mean(0)
    np.testing.assert_allclose(acc.moments().m2, (E * E).sum(0), rtol=1e-10)


def test_far_blocks_are_judged_in_the_data_units(monkeypatch):
    """Rows with a small spread: a block 50 sds away (offset 0.5 when sd = 0.01) is far,
    however small its offset is in absolute terms."""
    monkeypatch.setattr(accumulate, "BLOCK_BYTES", 8 * 3 * 64)  # 256-row blocks
    rng = np.random.default_rng(7)
    near, far = rng.standard_normal((256, 3)) * 0.01, rng.standard_normal((256, 3)) * 0.01 + 0.5
    exact = []
    original = MomentAccumulator._merge_exact
    monkeypatch.setattr(
        MomentAccumulator, "_merge_exact", lambda self, X: exact.append(len(X)) or original(self, X)
    )
    acc = MomentAccumulator(3)
    acc.add(near)
    acc.add(far)
    assert exact == [256]


@pytest.mark.parametrize("diag_only", [False, True])
def test_an_accumulator_without_rows_gives_empty_moments(diag_only):
    """What a pass-1 task returns for a class whose rows in its span are all held out."""
    m = MomentAccumulator(3, diag_only=diag_only).moments()
    assert m.n == 0
    np.testing.assert_array_equal(m.mean, np.zeros(3))
    np.testing.assert_array_equal(m.m2, np.zeros(3) if diag_only else np.zeros((3, 3)))
    if not diag_only:
        np.testing.assert_array_equal(m.t3, np.zeros(3))
        assert m.q4 == 0.0


def test_columns_with_different_means_stay_on_the_shifted_path(monkeypatch):
    """K is the first block's mean per column: blocks near it in every column take the fast
    path even when the columns' means differ by far more than their spread."""
    monkeypatch.setattr(accumulate, "BLOCK_BYTES", 8 * 3 * 64)  # 256-row blocks
    rng = np.random.default_rng(8)
    centre = np.array([0.0, 100.0, -50.0])
    exact = []
    original = MomentAccumulator._merge_exact
    monkeypatch.setattr(
        MomentAccumulator, "_merge_exact", lambda self, X: exact.append(len(X)) or original(self, X)
    )
    acc = MomentAccumulator(3)
    for _ in range(3):
        acc.add(rng.standard_normal((256, 3)) + centre)
    assert exact == []


def test_far_is_the_two_sd_rule_of_the_rows_so_far():
    """_far(offset): is a block mean K + offset more than MAX_SHIFT sds (of the rows added
    so far, about their own mean) from K, in any column. Checked just inside and just
    outside that distance, after a second block moved the running mean off K."""
    rng = np.random.default_rng(9)
    first = rng.standard_normal((400, 3)) * np.array([3.0, 0.5, 10.0])
    second = first + np.array([4.0, 0.6, 12.0])  # mean 1.3 sd off K: still the fast path
    acc = MomentAccumulator(3)
    acc.add(first)
    acc.add(second)
    sd = np.concatenate([first, second]).std(axis=0)
    for j in range(3):
        for scale, far in ((0.99, False), (1.01, True)):
            offset = np.zeros(3)
            offset[j] = scale * accumulate.MAX_SHIFT * sd[j]
            assert acc._far(offset) is far, (j, scale)


def test_a_far_block_after_a_single_row_is_merged_exactly(monkeypatch):
    """One row has no spread, so any block away from it is far: merged exactly."""
    rng = np.random.default_rng(10)
    X = np.concatenate([np.zeros((1, 3)), rng.standard_normal((300, 3)) + 1e7])
    exact = []
    original = MomentAccumulator._merge_exact
    monkeypatch.setattr(
        MomentAccumulator, "_merge_exact", lambda self, X: exact.append(len(X)) or original(self, X)
    )
    acc = MomentAccumulator(3)
    acc.add(X[:1])
    acc.add(X[1:])
    assert exact == [300]
    np.testing.assert_allclose(acc.moments().covariance(ddof=1), np.cov(X, rowvar=False), rtol=1e-9)


def test_diagonal_accumulator_takes_the_exact_path_only_for_far_blocks(monkeypatch):
    monkeypatch.setattr(accumulate, "BLOCK_BYTES", 8 * 3 * 64)  # 256-row blocks
    rng = np.random.default_rng(11)
    exact = []
    original = MomentAccumulator._merge_exact
    monkeypatch.setattr(
        MomentAccumulator, "_merge_exact", lambda self, X: exact.append(len(X)) or original(self, X)
    )
    acc = MomentAccumulator(3, diag_only=True)
    for off in (0.0, 1.0, -1.0):  # within 2 sd of K
        acc.add(rng.standard_normal((256, 3)) + off)
    assert exact == []
    acc.add(rng.standard_normal((256, 3)) + 50.0)
    assert exact == [256]
