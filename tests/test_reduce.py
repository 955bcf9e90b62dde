"""Reductions against naive numpy references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from actstats.errors import ActstatsError
from actstats.net.reduce import parse_reduce_options, parse_reduction


def _naive_grid(x: np.ndarray, s: int) -> np.ndarray:
    """Adaptive average pooling: cell i spans floor(i*H/S) .. ceil((i+1)*H/S)."""
    n, c, h, w = x.shape
    out = np.empty((n, c, s, s))
    for i in range(s):
        for j in range(s):
            y0, y1 = (i * h) // s, math.ceil((i + 1) * h / s)
            x0, x1 = (j * w) // s, math.ceil((j + 1) * w / s)
            out[:, :, i, j] = x[:, :, y0:y1, x0:x1].mean(axis=(2, 3))
    return out.reshape(n, -1)


@settings(max_examples=25, deadline=None)
@given(
    c=st.integers(1, 4),
    h=st.integers(1, 9),
    w=st.integers(1, 9),
    s=st.integers(1, 9),
    seed=st.integers(0, 2**16),
)
def test_grid_equals_naive_adaptive_pooling(c: int, h: int, w: int, s: int, seed: int) -> None:
    s = min(s, h, w)
    x = np.random.default_rng(seed).normal(size=(2, c, h, w))
    red = parse_reduction(f"grid:{s}")
    red.check("l", (c, h, w))
    got = red(torch.from_numpy(x)).numpy()
    assert got.shape == (2, red.dim((c, h, w)))
    np.testing.assert_allclose(got, _naive_grid(x, s), rtol=1e-12, atol=1e-12)


def test_mean_and_full() -> None:
    x = np.random.default_rng(0).normal(size=(3, 5, 4, 6))
    np.testing.assert_allclose(
        parse_reduction("mean")(torch.from_numpy(x)).numpy(), x.mean(axis=(2, 3))
    )
    full = parse_reduction("full")
    assert full.dim((5, 4, 6)) == 120
    np.testing.assert_array_equal(full(torch.from_numpy(x)).numpy(), x.reshape(3, -1))


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("grid:0", "use full, mean or grid:S"),
        ("grid", "use full, mean or grid:S"),
        ("max", "use full, mean or grid:S"),
    ],
)
def test_bad_reduction(text: str, match: str) -> None:
    with pytest.raises(ActstatsError, match=match):
        parse_reduction(text)


def test_reduction_must_fit_layer() -> None:
    with pytest.raises(ActstatsError, match=r"fc7=mean: needs a conv layer.*use fc7=full"):
        parse_reduction("mean").check("fc7", (4096,))
    with pytest.raises(ActstatsError, match=r"S must be 1..7"):
        parse_reduction("grid:8").check("conv5_3", (512, 7, 7))


def test_reduce_options() -> None:
    assert parse_reduce_options(["a=grid:2", "b = mean"]) == {"a": "grid:2", "b": "mean"}
    with pytest.raises(ActstatsError, match=r"expected LAYER=full\|mean\|grid:S"):
        parse_reduce_options(["conv4_3"])


def test_reduce_option_splits_at_the_first_equals_sign() -> None:
    """``LAYER=VALUE`` splits once, at the first ``=``: the rest is the (bad) value."""
    with pytest.raises(ActstatsError, match=r"--reduce 'grid:2=x': use full, mean or grid:S"):
        parse_reduce_options(["conv1_1=grid:2=x"])
