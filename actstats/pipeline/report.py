"""``actstats report``: measure what the page shows about real images, then write it.

The page itself (:func:`actstats.report.write_report`) only renders. This
module adds what needs the activation store and the model file:

* each neuron's real exemplars (:func:`actstats.pipeline.top.top_images`);
* held-out real images' NLL per unit at each layer under their class model, the
  reference line of the NLL plot (a held-out store; without one, the fitting
  store's images, labelled as such);
* the class outliers (:func:`actstats.pipeline.outliers.find_outliers`).

Paths not given are read from the run's ``run.json`` (``store``, ``models``,
``holdout_store``, relative to the run folder), which the demo writes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from actstats.errors import ActstatsError
from actstats.io.modelfile import load_models
from actstats.io.report import Picture, ReportExtras, SampleSet, load_run, write_report
from actstats.io.store import ActivationStore, open_store
from actstats.net.preprocessing import Preprocessing
from actstats.pipeline.outliers import class_nll, find_outliers
from actstats.pipeline.top import Exemplar, load_tiles, top_images
from actstats.stats.modelset import ModelSet

__all__ = ["exemplar_pictures", "outlier_pictures", "real_nll", "run_report"]


def exemplar_pictures(
    store: ActivationStore, neurons: Sequence[str], n: int, root: str | os.PathLike
) -> dict[str, list[Picture]]:
    """The top ``n`` real images of each neuron the store can rank (others are skipped)."""
    pre = Preprocessing.from_dict(store.attrs["preprocessing"])
    out: dict[str, list[Picture]] = {}
    for neuron in neurons:
        try:
            result = top_images(store, neuron, n)
        except ActstatsError:
            continue  # a layer the store does not hold: the class folder's images stand in
        tiles = load_tiles(result.top, root, pre)
        out[neuron] = [
            Picture(f"#{e.rank} {e.path} ({e.class_name}): {result.neuron} = {e.value:.3g}", t)
            for e, t in zip(result.top, tiles, strict=True)
            if t is not None
        ]
    return out


def real_nll(store: ActivationStore, models: ModelSet, classes: Sequence[str]) -> dict[str, float]:
    """Mean NLL per unit of the store's images of ``classes`` under their class models, per layer.

    Each class weighs the same (a mean of class means), as in the samples' curves.
    """
    per_class = []
    for cls in classes:
        if cls in models.classes and cls in store.attrs["class_names"]:
            per_class.append(
                {ly: float(np.mean(v)) for ly, v in class_nll(store, models, cls)[1].items()}
            )
    if not per_class:
        return {}
    layers = [ly for ly in per_class[0] if all(ly in p for p in per_class)]
    return {ly: float(np.mean([p[ly] for p in per_class])) for ly in layers}


def outlier_pictures(
    store: ActivationStore,
    models: ModelSet,
    classes: Sequence[str],
    k: int,
    root: str | os.PathLike,
) -> dict[str, list[Picture]]:
    """Each class's ``k`` least likely images, titled with their score and atypical units."""
    pre = Preprocessing.from_dict(store.attrs["preprocessing"])
    wanted = [c for c in classes if c in models.classes and c in store.attrs["class_names"]]
    out: dict[str, list[Picture]] = {}
    for res in find_outliers(store, models, classes=wanted, k=k) if wanted else []:
        exs = [Exemplar(o.rank, o.row, o.path, res.class_name, o.score) for o in res.overall]
        pics = []
        for o, tile in zip(res.overall, load_tiles(exs, root, pre), strict=True):
            if tile is None:
                continue
            worst = max(res.layers, key=lambda ly: o.layer_z[ly])
            units = ", ".join(u.unit for u in o.units[worst])
            title = f"#{o.rank} {o.path}: z {o.score:.1f}; {worst}: {units}"
            caption = f"z {o.score:.1f}; {o.units[worst][0].unit if o.units[worst] else worst}"
            pics.append(Picture(title, tile, caption))
        out[res.class_name] = pics
    return out


def _from_run(run_dir: Path, run: dict[str, Any], key: str, given: Any) -> str | None:
    if given is not None:
        return str(given)
    value = run.get(key)
    return str(run_dir / value) if value else None


def run_report(
    run_dir: str | os.PathLike,
    *,
    out: str | os.PathLike | None = None,
    store: str | os.PathLike | None = None,
    models: str | os.PathLike | None = None,
    holdout: str | os.PathLike | None = None,
    root: str | os.PathLike | None = None,
    n_real: int = 8,
    n_outliers: int = 6,
    title: str = "actstats report",
) -> Path:
    """Gather exemplars, the real-image NLL reference and outliers; write the page."""
    run_dir = Path(run_dir)
    sets, run, _ = load_run(run_dir)
    store_path = _from_run(run_dir, run, "store", store)
    models_path = _from_run(run_dir, run, "models", models)
    holdout_path = _from_run(run_dir, run, "holdout_store", holdout)
    extras = _extras(sets, store_path, models_path, holdout_path, root, n_real, n_outliers)
    return write_report(run_dir, out=out, n_real=n_real, title=title, extras=extras)


def _extras(
    sets: Sequence[SampleSet],
    store_path: str | None,
    models_path: str | None,
    holdout_path: str | None,
    root: str | os.PathLike | None,
    n_real: int,
    n_outliers: int,
) -> ReportExtras:
    classes = sorted({s.class_name for s in sets})
    st = open_store(store_path) if store_path else None
    ms = load_models(models_path) if models_path else None
    fields: dict[str, Any] = {}
    if st is not None:
        data_root = root or st.attrs.get("root")
        if not data_root:
            raise ActstatsError(f"store {st.path}: records no data root; pass --root DIR")
        fields["exemplars"] = exemplar_pictures(
            st, sorted({s.neuron for s in sets}), n_real, data_root
        )
        fields["exemplar_note"] = f"Exemplars: every image of {st.path} ranked by the unit."
        if ms is not None:
            fields["outliers"] = outlier_pictures(st, ms, classes, n_outliers, data_root)
    if ms is not None and (holdout_path or st is not None):
        ref = open_store(holdout_path) if holdout_path else st
        fields["real_nll"] = real_nll(ref, ms, classes)
        fields["real_nll_label"] = (
            "held-out real images" if holdout_path else "real images (fitting set)"
        )
    return ReportExtras(**fields)
