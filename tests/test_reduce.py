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
        ("grid:0", "use full, mean, grid:S, cls, tokens:S"),
        ("grid", "use full, mean, grid:S"),
        ("max", "use full, mean, grid:S"),
        ("tokens:0", "use full, mean, grid:S"),
        ("mean+mean", "a part is repeated"),
    ],
)
def test_bad_reduction(text: str, match: str) -> None:
    with pytest.raises(ActstatsError, match=match):
        parse_reduction(text)


def test_reduction_must_fit_layer() -> None:
    with pytest.raises(ActstatsError, match=r"fc7=mean: mean needs a spatial or token layer"):
        parse_reduction("mean").check("fc7", (4096,))
    with pytest.raises(ActstatsError, match=r"cls needs leading tokens.*layout NHWC"):
        parse_reduction("cls", "NHWC").check("features.5", (14, 14, 384))
    with pytest.raises(ActstatsError, match=r"tokens:4 needs a token layer"):
        parse_reduction("tokens:4", "NCHW").check("layer4", (512, 7, 7))
    with pytest.raises(ActstatsError, match=r"S must be 1..7"):
        parse_reduction("grid:8").check("conv5_3", (512, 7, 7))


def test_reduce_options() -> None:
    assert parse_reduce_options(["a=grid:2", "b = mean"]) == {"a": "grid:2", "b": "mean"}
    with pytest.raises(ActstatsError, match=r"expected LAYER=REDUCTION"):
        parse_reduce_options(["conv4_3"])


def test_reduce_option_splits_at_the_first_equals_sign() -> None:
    """``LAYER=VALUE`` splits once, at the first ``=``: the rest is the (bad) value."""
    with pytest.raises(ActstatsError, match=r"--reduce 'grid:2=x': use full, mean, grid:S"):
        parse_reduce_options(["conv1_1=grid:2=x"])


# ------------------------------------------------------------------ layouts
def _naive_tokens(x: np.ndarray, s: int) -> np.ndarray:
    """Adaptive 1-D average pooling of (N, T, C) tokens, channel-major (c * S + s)."""
    n, t, c = x.shape
    out = np.empty((n, c, s))
    for i in range(s):
        a, b = (i * t) // s, math.ceil((i + 1) * t / s)
        out[:, :, i] = x[:, a:b].mean(axis=1)
    return out.reshape(n, -1)


def test_nhwc_reductions_equal_the_nchw_ones_of_the_same_tensor() -> None:
    x = np.random.default_rng(1).normal(size=(2, 5, 7, 3))  # N, H, W, C
    chw = x.transpose(0, 3, 1, 2)
    t = torch.from_numpy(x)
    np.testing.assert_allclose(parse_reduction("mean", "NHWC")(t).numpy(), x.mean(axis=(1, 2)))
    np.testing.assert_allclose(parse_reduction("grid:2", "NHWC")(t).numpy(), _naive_grid(chw, 2))
    assert parse_reduction("grid:2", "NHWC").dim((5, 7, 3)) == 3 * 4
    np.testing.assert_array_equal(parse_reduction("full", "NHWC")(t).numpy(), x.reshape(2, -1))


def test_vit_tokens_keep_the_class_token_apart() -> None:
    rng = np.random.default_rng(2)
    cls, patches = rng.normal(size=(2, 1, 6)), rng.normal(size=(2, 3 * 4, 6))
    x = np.concatenate([cls, patches], axis=1)  # N, 1 + 3*4, C
    t, layout, shape = torch.from_numpy(x), "NTC:1+3x4", (13, 6)
    grid = patches.reshape(2, 3, 4, 6).transpose(0, 3, 1, 2)  # patch tokens in raster order
    np.testing.assert_allclose(parse_reduction("mean", layout)(t).numpy(), patches.mean(axis=1))
    np.testing.assert_array_equal(parse_reduction("cls", layout)(t).numpy(), cls[:, 0])
    np.testing.assert_allclose(parse_reduction("grid:2", layout)(t).numpy(), _naive_grid(grid, 2))
    np.testing.assert_allclose(
        parse_reduction("tokens:5", layout)(t).numpy(), _naive_tokens(patches, 5)
    )
    both = parse_reduction("cls+grid:3", layout)
    assert both.dim(shape) == 6 + 6 * 9
    np.testing.assert_allclose(
        both(t).numpy(), np.hstack([cls[:, 0], _naive_grid(grid, 3)]), rtol=1e-12
    )


def test_unit_values_and_stored_columns_follow_the_layout() -> None:
    from actstats.net.reduce import unit_value

    rng = np.random.default_rng(3)
    x = torch.from_numpy(rng.normal(size=(2, 1 + 2 * 3, 4)))  # ViT-like, grid 2x3
    layout = parse_reduction("full", "NTC:1+2x3").layout
    assert torch.allclose(unit_value(x, 2, None, layout), x[:, 1:, 2].mean(1))
    assert torch.equal(unit_value(x, 2, (1, 2), layout), x[:, 1 + 1 * 3 + 2, 2])
    full = parse_reduction("full", layout)
    col = full.column((7, 4), 2, (1, 2))
    assert torch.equal(full(x)[:, col], x[:, 1 + 1 * 3 + 2, 2])
    mixed = parse_reduction("cls+mean", layout)
    assert torch.allclose(mixed(x)[:, mixed.column((7, 4), 2)], unit_value(x, 2, None, layout))
    assert parse_reduction("grid:2", layout).column((7, 4), 2) is None
    y = torch.from_numpy(rng.normal(size=(2, 3, 5, 4)))  # NHWC
    nhwc = parse_reduction("full", "NHWC")
    assert torch.equal(nhwc(y)[:, nhwc.column((3, 5, 4), 1, (2, 3))], y[:, 2, 3, 1])
    assert torch.equal(unit_value(y, 1, (2, 3), nhwc.layout), y[:, 2, 3, 1])


@pytest.mark.parametrize(
    ("shape", "layout", "expected"),
    [
        ((512, 14, 14), "NCHW", "grid:2"),
        ((14, 14, 384), "NHWC", "grid:2"),
        ((197, 768), "NTC:1+14x14", "cls+grid:2"),
        ((197, 3072), "NTC:1+14x14", "cls+grid:2"),  # 15,360 values: still within the budget
        ((64, 49, 64), "NTC", "tokens:4"),
        ((4096, 1, 1), "NCHW", "mean"),
        ((4096,), "NC", "full"),
        ((70000,), "NC", None),  # nothing keeps a wide vector within the budget
    ],
)
def test_default_reductions_stay_within_the_budget(shape, layout, expected) -> None:
    from actstats.net.layout import parse_layout
    from actstats.net.reduce import DEFAULT_MAX_VALUES, default_reduction

    got = default_reduction(shape, parse_layout(layout))
    assert (str(got) if got else None) == expected
    if got is not None:
        assert got.dim(shape) <= DEFAULT_MAX_VALUES


def test_unit_columns_follow_the_layout_and_column_name_inverts_them() -> None:
    """``top``'s unit -> columns mapping on NHWC and ViT tokens, against numpy indexing."""
    rng = np.random.default_rng(4)
    y = rng.normal(size=(2, 3, 5, 4))  # N, H, W, C
    full = parse_reduction("full", "NHWC")
    rows = full(torch.from_numpy(y)).numpy()
    at = full.unit_columns("L", (3, 5, 4), 1, (2, 3))
    np.testing.assert_array_equal(rows[:, at.columns[0]], y[:, 2, 3, 1])
    chan = full.unit_columns("L", (3, 5, 4), 1)
    np.testing.assert_allclose(rows[:, chan.columns].mean(1), y[..., 1].mean(axis=(1, 2)))
    for column in range(full.dim((3, 5, 4))):
        name = full.column_name("L", (3, 5, 4), column)
        c = int(name.split(":")[1].split("@")[0])
        pos = tuple(int(v) for v in name.split("@")[1].split(","))
        assert list(full.unit_columns("L", (3, 5, 4), c, pos).columns) == [column]
    x = rng.normal(size=(2, 1 + 4 * 4, 3))  # ViT-like: class token + 4x4 patches
    vit = parse_reduction("cls+grid:2", "NTC:1+4x4")
    rows = vit(torch.from_numpy(x)).numpy()
    cell = vit.unit_columns("L", (17, 3), 2, (3, 0))
    patches = x[:, 1:].reshape(2, 4, 4, 3)
    np.testing.assert_allclose(rows[:, cell.columns[0]], patches[:, 2:4, 0:2, 2].mean((1, 2)))
    assert cell.region == (2, 4, 0, 2) and not cell.exact
    assert vit.column_name("L", (17, 3), 2) == "L:2 token 0"
    with pytest.raises(ActstatsError, match=r"keeps no positions of L \(cls\)"):
        parse_reduction("cls", "NTC:1+4x4").unit_columns("L", (17, 3), 2, (0, 0))
