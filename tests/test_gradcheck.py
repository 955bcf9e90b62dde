"""Gradients of every objective term against finite differences, in float64, on a tiny network."""

from __future__ import annotations

import pytest
import torch
from test_objectives import TERMS, objectives_for, tiny_network

from actstats.synth import objectives as obj


@pytest.fixture(scope="module")
def net64():
    return tiny_network(torch.float64)


@pytest.mark.parametrize("name", TERMS)
def test_gradient_matches_finite_differences(net64, name: str) -> None:
    term = objectives_for(net64)[name]
    x = torch.randn(1, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    layers = sorted(term.layers - {obj.INPUT})

    def acts_of(inp: torch.Tensor) -> dict[str, torch.Tensor]:
        acts = dict(net64.activations(inp, layers)) if layers else {}
        acts[obj.INPUT] = inp
        return acts

    with torch.no_grad():
        term.update(acts_of(x), 0)  # fixes the outlier selection
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda inp: term(acts_of(inp)), (x,), eps=1e-6, atol=1e-5, rtol=1e-4
    )
