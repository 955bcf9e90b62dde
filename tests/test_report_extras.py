"""The report with a store and a model file: exemplars, the real-image NLL line, outliers."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from conftest import PlantedDigits
from scipy.stats import multivariate_normal
from test_report import _chromium, assert_renders_cleanly, chromium_check
from test_report import run_dir as run_dir

from actstats.io.modelfile import load_models
from actstats.io.store import open_store
from actstats.pipeline.report import real_nll, run_report
from actstats.pipeline.top import top_images


@pytest.fixture
def page(run_dir: Path, planted_digits: PlantedDigits) -> Path:
    return run_report(run_dir, store=planted_digits.store, models=planted_digits.models, n_real=4)


def test_rows_start_with_the_units_real_exemplars(page: Path, planted_digits) -> None:
    html = page.read_text()
    assert html.count("real exemplars: top 4 of the store") == 2
    best = top_images(planted_digits.store, "fc8:1", 4).top
    row = html[html.index('data-neuron="fc8:1"') :]
    titles = re.findall(r'title="(#\d [^"]+)"', row)[:4]
    assert [t.split()[1] for t in titles] == [e.path for e in best]


def test_outliers_section_shows_the_planted_zeros_first(page: Path, planted_digits) -> None:
    html = page.read_text()
    section = html[html.index("<h2>Class outliers</h2>") :]
    one = section[section.index("one: least likely") :]
    firsts = re.findall(r'title="#\d (\S+):', one)[:4]
    assert set(firsts) == set(planted_digits.planted)


def test_real_nll_is_the_mean_of_class_means(planted_digits: PlantedDigits) -> None:
    store, models = open_store(planted_digits.store), load_models(planted_digits.models)
    ref = real_nll(store, models, ["zero", "one"])
    labels, ok = store.group["images/label"][:], store.group["images/ok"][:]
    X = store.acts("fc8")[:].astype(np.float64)
    expected = []
    for name in ("zero", "one"):
        g = models[name].gaussian("fc8")
        rows = X[ok & (labels == store.attrs["class_names"].index(name))]
        expected.append(-multivariate_normal(g.mean_, g.get_covariance()).logpdf(rows).mean() / 10)
    assert ref["fc8"] == pytest.approx(np.mean(expected), rel=1e-6)


@pytest.mark.skipif(_chromium() is None, reason="Chromium is not installed")
def test_full_report_renders_in_chromium(page: Path, tmp_path: Path) -> None:
    dom, log = chromium_check(page, tmp_path)
    n = len(re.findall(r'<img src="data:image/png', page.read_text()))
    assert n == 2 * (4 + 3 * 2) + 2 * 6 + 2  # rows, outliers of two classes, two plots
    assert_renders_cleanly(dom, log, n)
