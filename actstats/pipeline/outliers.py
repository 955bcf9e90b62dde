"""``actstats outliers``: the real images least likely under their own class's model.

Data-set debugging: a mislabelled, corrupt or off-distribution image sits far
from its class in activation space. For every image of a class, each fitted
layer model gives its negative log-likelihood per unit (one dask pass over the
store's chunks, ``map_blocks`` scoring each chunk). Layers differ in scale, so
each layer's NLLs are made comparable as robust z-scores within the class
(``(nll - median) / (1.4826 MAD)``); an image's overall score is the largest of
them: how atypical it is at its most atypical depth (a corrupt or odd-looking
image stands out at shallow layers, a mislabelled one at the logits, and a mean
over layers would dilute either). For the images at the top, the units that make
them atypical are each unit's share of the squared Mahalanobis distance
(:meth:`~actstats.stats.gaussian.GaussianLayerModel.unit_contributions`) with
its z-score.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np

from actstats.errors import ActstatsError
from actstats.eval.metrics import layer_nll
from actstats.io.modelfile import load_models
from actstats.io.paths import write_atomic
from actstats.io.store import ActivationStore, open_store
from actstats.net.preprocessing import Preprocessing
from actstats.net.reduce import stored_reduction
from actstats.pipeline.schedule import Progress
from actstats.pipeline.top import Exemplar, load_tiles
from actstats.stats.modelset import ALL_CLASSES, ModelSet

__all__ = [
    "ClassOutliers",
    "Outlier",
    "UnitShare",
    "class_nll",
    "class_outliers",
    "class_rows",
    "find_outliers",
    "robust_z",
    "run_outliers",
    "write_outliers",
]

#: 1 / Phi^-1(3/4): the MAD of a normal distribution times this is its standard deviation.
_MAD_TO_SD = 1.482602218505602


@dataclass(frozen=True)
class UnitShare:
    """One unit's share of an image's squared Mahalanobis distance, and its z-score."""

    unit: str
    contribution: float
    zscore: float


@dataclass(frozen=True)
class Outlier:
    """An image ranked by how unlikely it is under its class model.

    ``score`` is the ranking's value (overall: the largest of ``layer_z``; per layer: that
    layer's robust z); ``nll`` the NLL per unit of each layer; ``units`` the three
    units of each layer that add most to its Mahalanobis distance.
    """

    rank: int
    row: int
    path: str
    score: float
    nll: dict[str, float]
    layer_z: dict[str, float]
    units: dict[str, list[UnitShare]]


@dataclass(frozen=True)
class ClassOutliers:
    """The ``k`` least likely images of one class: overall and for each layer."""

    class_name: str
    n_images: int
    layers: list[str]
    overall: list[Outlier]
    per_layer: dict[str, list[Outlier]]

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form (``outliers.json`` holds one per class)."""
        data = asdict(self)
        data["class"] = data.pop("class_name")
        return data


def robust_z(values: np.ndarray) -> np.ndarray:
    """``(v - median) / (1.4826 MAD)``: a z-score a few outliers cannot hide behind."""
    v = np.asarray(values, dtype=np.float64)
    med = np.median(v)
    mad = _MAD_TO_SD * np.median(np.abs(v - med))
    if not mad > 0:
        mad = float(np.std(v)) or 1.0
    return (v - med) / mad


def _check_same_network(store: ActivationStore, models: ModelSet) -> None:
    recorded, used = models.provenance.get("weights_sha256"), store.attrs.get("weights_sha256")
    if recorded and used and recorded != used:
        raise ActstatsError(
            f"store {store.path}: collected with weights {used[:12]}..., but the model file was "
            f"fitted on weights {recorded[:12]}...; pass the store the models were fitted on"
        )


def _layer_nll(X: da.Array, model: Any) -> da.Array:
    """NLL per unit of every row, one task per store chunk."""
    return X.map_blocks(
        lambda block: layer_nll(model, block, per_unit=True), drop_axis=1, dtype=np.float64
    )


def _unit_shares(model: Any, x: np.ndarray, name: Any, top: int = 3) -> list[UnitShare]:
    contrib = model.unit_contributions(x[None])[0]
    z = model.unit_zscores(x[None])[0]
    worst = np.argsort(contrib)[::-1][:top]
    return [UnitShare(name(int(j)), float(contrib[j]), float(z[j])) for j in worst]


def class_rows(store: ActivationStore, class_name: str) -> np.ndarray:
    """Store rows of one class's collected images."""
    names = list(store.attrs["class_names"])
    if class_name not in names:
        raise ActstatsError(f"--class {class_name!r}: not a class of store {store.path}")
    ok = store.group["images/ok"][:]
    rows = np.flatnonzero(ok & (store.group["images/label"][:] == names.index(class_name)))
    if len(rows) == 0:
        raise ActstatsError(f"store {store.path}: no collected images of class {class_name!r}")
    return rows


def class_nll(
    store: ActivationStore,
    models: ModelSet,
    class_name: str,
    *,
    scheduler: str = "threads",
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """NLL per unit of every image of a class under its own models, per fitted layer.

    Returns the store rows and ``{layer: (n_rows,)}`` for the layers both the model
    file and the store hold. One dask task per store chunk and layer.
    """
    rows = class_rows(store, class_name)
    cm = models[class_name]
    layers = [ly for ly in cm.layers if ly in store.layers]
    if not layers:
        raise ActstatsError(
            f"the model file's layers ({', '.join(cm.layers)}) are not in store {store.path}"
        )
    lazy = {ly: da.from_zarr(store.acts(ly))[rows] for ly in layers}
    (nll,) = dask.compute(
        {ly: _layer_nll(X, cm[ly]) for ly, X in lazy.items()}, scheduler=scheduler
    )
    return rows, nll


def class_outliers(
    store: ActivationStore,
    models: ModelSet,
    class_name: str,
    k: int = 10,
    *,
    scheduler: str = "threads",
) -> ClassOutliers:
    """Rank one class's images by how unlikely each is under the class's own models."""
    rows, nll = class_nll(store, models, class_name, scheduler=scheduler)
    cm = models[class_name]
    layers = list(nll)
    lazy = {ly: da.from_zarr(store.acts(ly))[rows] for ly in layers}
    z = {ly: robust_z(v) for ly, v in nll.items()}
    overall = np.max([z[ly] for ly in layers], axis=0)
    entries = {e["name"]: e for e in store.attrs["layers"]}
    namers = {
        ly: (
            lambda j, ly=ly: stored_reduction(entries[ly]).column_name(
                ly, tuple(entries[ly]["shape"]), j
            )
        )
        for ly in layers
    }
    orders = {"overall": _top(overall, k)} | {ly: _top(z[ly], k) for ly in layers}
    picked = np.unique(np.concatenate(list(orders.values())))
    (acts,) = dask.compute({ly: X[picked] for ly, X in lazy.items()}, scheduler=scheduler)
    at = {int(i): j for j, i in enumerate(picked)}
    paths = store.group["images/path"]

    def outlier(rank: int, i: int, score: float) -> Outlier:
        x = {ly: np.asarray(acts[ly][at[i]], dtype=np.float64) for ly in layers}
        return Outlier(
            rank=rank,
            row=int(rows[i]),
            path=str(paths[int(rows[i])]),
            score=score,
            nll={ly: float(nll[ly][i]) for ly in layers},
            layer_z={ly: float(z[ly][i]) for ly in layers},
            units={ly: _unit_shares(cm[ly], x[ly], namers[ly]) for ly in layers},
        )

    scores = {"overall": overall} | z
    ranked = {
        key: [outlier(r, int(i), float(scores[key][i])) for r, i in enumerate(order, start=1)]
        for key, order in orders.items()
    }
    overall_list = ranked.pop("overall")
    return ClassOutliers(class_name, len(rows), layers, overall_list, ranked)


def _top(score: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest scores, largest first."""
    return np.argsort(score, kind="stable")[::-1][:k]


def find_outliers(
    store: str | os.PathLike | ActivationStore,
    models: str | os.PathLike | ModelSet,
    *,
    classes: Sequence[str] | None = None,
    k: int = 10,
    scheduler: str = "threads",
    progress: Progress | None = None,
) -> list[ClassOutliers]:
    """:func:`class_outliers` for ``classes`` (default: every class the models were fitted on)."""
    if k < 1:
        raise ActstatsError(f"-k {k}: must be >= 1")
    st = store if isinstance(store, ActivationStore) else open_store(store)
    ms = models if isinstance(models, ModelSet) else load_models(models)
    _check_same_network(st, ms)
    wanted = list(classes) if classes else [c for c in ms.classes if c != ALL_CLASSES]
    missing = [c for c in wanted if c not in ms.classes]
    if missing:
        raise ActstatsError(
            f"--class {', '.join(missing)}: no fitted model; the model file has "
            f"{', '.join(c for c in ms.classes if c != ALL_CLASSES)}"
        )
    out = []
    for i, cls in enumerate(wanted):
        out.append(class_outliers(st, ms, cls, k, scheduler=scheduler))
        if progress is not None:
            progress(i + 1, len(wanted))
    return out


# ------------------------------------------------------------------ writing
def _draw(results: Sequence[ClassOutliers], root: Path, pre: Preprocessing, path: Path) -> None:
    """One row per class: its least likely images, titled with score and the worst unit."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = max(len(r.overall) for r in results)
    fig, axes = plt.subplots(
        len(results), cols, figsize=(1.8 * cols, 2.5 * len(results) + 0.4), squeeze=False
    )
    for r, res in enumerate(results):
        exs = [Exemplar(o.rank, o.row, o.path, res.class_name, o.score) for o in res.overall]
        for c, (o, tile) in enumerate(zip(res.overall, load_tiles(exs, root, pre), strict=True)):
            ax = axes[r][c]
            if tile is not None:
                ax.imshow(tile, interpolation="nearest")
            worst = max(res.layers, key=lambda ly: o.layer_z[ly])
            unit = o.units[worst][0].unit if o.units[worst] else worst
            ax.set_title(
                f"{res.class_name} #{o.rank}  z {o.score:.1f}\n{Path(o.path).name}\n{unit}",
                fontsize=7,
            )
        for ax in axes[r]:
            ax.axis("off")
    fig.suptitle("Least likely real images under their own class model", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_outliers(
    results: Sequence[ClassOutliers],
    output: str | os.PathLike,
    *,
    root: str | os.PathLike,
    preprocessing: Preprocessing,
) -> tuple[Path, Path]:
    """Write ``outliers.png`` and ``outliers.json`` into ``output``."""
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    png, record = out / "outliers.png", out / "outliers.json"
    _draw(results, Path(root), preprocessing, png)
    write_atomic(
        record, json.dumps({"root": str(root), "classes": [r.to_json() for r in results]}, indent=1)
    )
    return png, record


def run_outliers(
    store: str | os.PathLike,
    models: str | os.PathLike,
    output: str | os.PathLike | None,
    *,
    classes: Sequence[str] | None = None,
    k: int = 10,
    root: str | os.PathLike | None = None,
    progress: Progress | None = None,
) -> tuple[list[ClassOutliers], Path, Path]:
    """The CLI's one call: rank every class's images, draw and record them."""
    st = open_store(store)
    results = find_outliers(st, models, classes=classes, k=k, progress=progress)
    root = root or st.attrs.get("root")
    if not root:
        raise ActstatsError(f"store {st.path}: records no data root; pass --root DIR")
    if output is None:
        output = (Path(st.path).parent if "://" not in st.path else Path(".")) / "outliers"
    pre = Preprocessing.from_dict(st.attrs["preprocessing"])
    png, record = write_outliers(results, output, root=root, preprocessing=pre)
    return results, png, record
