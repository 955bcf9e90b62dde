"""The per-batch rows function of collect: eager, compiled (padded to one shape), and the
one-warning fallback when a model cannot be compiled."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from actstats.net.network import Network
from actstats.net.preprocessing import Preprocessing
from actstats.net.reduce import parse_reduction
from actstats.net.rows import RowsFunction, rows_function

LAYERS = {"pool2": "mean", "pool4": "grid:2", "fc8": "full"}


def _reductions(net: Network) -> dict:
    return {n: parse_reduction(r, net.layer_layout(n)) for n, r in LAYERS.items()}


def _reference(net: Network, x: torch.Tensor) -> torch.Tensor:
    """Independent of RowsFunction: hooks through Network.activations, reductions, concat."""
    acts = net.activations(x, list(LAYERS))
    return torch.cat([r(acts[n]).flatten(1) for n, r in _reductions(net).items()], 1)


def test_eager_rows_are_the_reduced_activations_side_by_side(digits_net: Network) -> None:
    x = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        got = RowsFunction(digits_net, _reductions(digits_net))(x)
        want = _reference(digits_net, x)
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_compiled_rows_pad_to_one_shape_and_match_eager(digits_net: Network) -> None:
    """aot_eager traces with dynamo and AOTAutograd (the compiled path's graph) without
    generating kernels; a short last batch is padded to the compiled shape and cut back."""
    torch._dynamo.reset()
    rows = RowsFunction(
        digits_net, _reductions(digits_net), compile=True, batch_size=8, backend="aot_eager"
    )
    g = torch.Generator().manual_seed(1)
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback warning
        for n in (8, 3):
            x = torch.randn(n, 3, 32, 32, generator=g)
            torch.testing.assert_close(rows(x), _reference(digits_net, x), rtol=1e-5, atol=1e-5)
    assert rows.compiled


class _Branchy(nn.Module):
    """Data-dependent control flow: torch.fx cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x).relu()
        if h.sum() > 0:
            h = h * 2
        return self.fc(h.mean((2, 3)))


def test_a_model_that_cannot_compile_runs_eager_with_one_warning() -> None:
    torch.manual_seed(0)
    net = Network(_Branchy().eval(), "branchy", "none", Preprocessing(8, 8, [0.5] * 3, [0.5] * 3))
    reds = {"fc": parse_reduction("full")}
    with pytest.warns(UserWarning, match=r"torch.compile of branchy failed .*running eager"):
        rows = rows_function(net, reds, compile=True, batch_size=4, backend="aot_eager")
    assert not rows.compiled
    x = torch.randn(3, 3, 8, 8)
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once, at the attempt, not per call
        torch.testing.assert_close(rows(x), net.module(x))
    assert rows_function(net, reds, compile=True, batch_size=4, backend="aot_eager") is rows
