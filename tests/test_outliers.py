"""``actstats outliers``: zeros planted among ones rank first; scores against scipy."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import PLANTED_LAYERS, PlantedDigits
from scipy.stats import median_abs_deviation, multivariate_normal
from typer.testing import CliRunner

from actstats.cli import app
from actstats.errors import ActstatsError
from actstats.io.modelfile import load_models
from actstats.io.store import open_store
from actstats.net.reduce import parse_reduction
from actstats.pipeline.outliers import find_outliers, robust_z


@pytest.fixture(scope="module")
def one(planted_digits: PlantedDigits):
    return find_outliers(planted_digits.store, planted_digits.models, classes=["one"], k=6)[0]


def test_planted_zeros_rank_first_overall(one, planted_digits: PlantedDigits) -> None:
    assert {o.path for o in one.overall[:4]} == set(planted_digits.planted)
    assert one.layers == PLANTED_LAYERS
    assert one.n_images == len(list((planted_digits.root / "one").glob("*.png")))


def test_planted_zeros_lead_the_logits(one, planted_digits: PlantedDigits) -> None:
    assert {o.path for o in one.per_layer["fc8"][:4]} == set(planted_digits.planted)
    assert [o.score for o in one.per_layer["fc8"]] == sorted(
        [o.score for o in one.per_layer["fc8"]], reverse=True
    )


def test_layer_nll_matches_scipy(one, planted_digits: PlantedDigits) -> None:
    store = open_store(planted_digits.store)
    g = load_models(planted_digits.models)["one"].gaussian("fc8")
    worst = one.overall[0]
    x = store.acts("fc8")[worst.row].astype(np.float64)
    ref = -multivariate_normal(g.mean_, g.get_covariance()).logpdf(x) / g.n_features_
    assert worst.nll["fc8"] == pytest.approx(ref, rel=1e-6)
    shares = worst.units["fc8"]
    contrib = g.unit_contributions(x[None])[0]
    assert [s.contribution for s in shares] == pytest.approx(sorted(contrib)[::-1][:3])
    assert contrib.sum() == pytest.approx(g.mahalanobis(x[None])[0])


def test_units_are_named_as_neurons(one) -> None:
    unit = one.overall[0].units["conv3_2"][0].unit
    assert unit.startswith("conv3_2:") and unit.endswith("/2x2")
    assert one.overall[0].units["fc7"][0].unit.startswith("fc7:")


def test_robust_z_against_scipy() -> None:
    v = np.random.default_rng(0).normal(size=50)
    v[3] = 40.0
    ref = (v - np.median(v)) / median_abs_deviation(v, scale="normal")
    np.testing.assert_allclose(robust_z(v), ref)
    assert np.all(robust_z(np.ones(5)) == 0)


@pytest.mark.parametrize(
    ("reduce", "shape"), [("full", (3, 2, 4)), ("grid:2", (3, 4, 4)), ("mean", (3, 5, 5))]
)
def test_column_name_inverts_unit_columns(reduce: str, shape: tuple[int, ...]) -> None:
    red = parse_reduction(reduce)
    for column in range(red.dim(shape)):
        name = red.column_name("L", shape, column)
        channel = int(name.split(":")[1].split("@")[0].split()[0])
        pos = None
        if "@" in name:
            pos = tuple(int(v) for v in name.split("@")[1].split(","))
        cols = red.unit_columns("L", shape, channel, pos).columns
        assert column in cols if reduce == "grid:2" else list(cols) == [column]


def test_outliers_cli_writes_and_lists(planted_digits: PlantedDigits, tmp_path) -> None:
    args = [str(planted_digits.store), str(planted_digits.models), "--classes", "one", "-k", "4"]
    result = CliRunner().invoke(app, ["outliers", *args, "-o", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    assert "planted_zero_" in result.output
    data = json.loads((tmp_path / "o" / "outliers.json").read_text())
    assert {o["path"] for o in data["classes"][0]["overall"]} == set(planted_digits.planted)
    assert (tmp_path / "o" / "outliers.png").stat().st_size > 5000
    with pytest.raises(ActstatsError, match=r"--class seven: no fitted model"):
        find_outliers(planted_digits.store, planted_digits.models, classes=["seven"])
