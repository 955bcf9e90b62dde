"""``actstats top``: the real images that drive a unit most and least, read from the store.

Every image's activations are already in the store, so exemplars need no
forward pass: one dask pass over the store's row chunks reads the unit's
columns (:meth:`actstats.reduce.Reduction.unit_columns`: an fc unit, a conv
channel's spatial mean, or the grid cell holding a conv position), masks rows
that were skipped or belong to other classes, and keeps the k largest and k
smallest values (``dask.array.argtopk``, a tree reduction, so memory does not
grow with N).

:func:`top_images` returns the ranking; :func:`write_top` draws it (each image as
the network saw it: resized and centre-cropped; for a conv position, the crop of
the receptive field) as ``top.png`` and records it in ``top.json``.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np

from actstats.errors import ActstatsError
from actstats.io.data import BadImageError, load_image
from actstats.io.paths import write_atomic
from actstats.io.store import ActivationStore, open_store
from actstats.net.names import NeuronSpec, parse_neuron
from actstats.net.network import load_network
from actstats.net.preprocessing import Preprocessing
from actstats.net.receptive import input_box, receptive_field
from actstats.net.reduce import UnitColumns, stored_reduction
from actstats.pipeline.schedule import Progress, task_progress

__all__ = [
    "Exemplar",
    "TopImages",
    "load_tiles",
    "locate",
    "row_mask",
    "run_top",
    "store_unit",
    "top_images",
    "unit_values",
    "write_top",
]


@dataclass(frozen=True)
class Exemplar:
    """One real image of a ranking: its 1-based ``rank``, store ``row``, file and value."""

    rank: int
    row: int
    path: str
    class_name: str
    value: float


@dataclass(frozen=True)
class TopImages:
    """The ``k`` images with the largest and the smallest values of one unit.

    ``region`` is the block of the layer's grid the unit covers (a conv position),
    ``box`` the input pixels ``(x0, y0, x1, y1)`` that block sees (None for whole
    channels and fc units); ``receptive_field`` says whether ``box`` is the exact
    receptive field or the block's share of the image.
    """

    neuron: str
    layer: str
    unit: str
    exact: bool
    class_name: str | None
    n_images: int
    top: list[Exemplar]
    bottom: list[Exemplar]
    region: tuple[int, int, int, int] | None = None
    box: tuple[int, int, int, int] | None = None
    receptive_field: bool = False

    def to_json(self) -> dict[str, Any]:
        """The JSON record written as ``top.json``."""
        data = asdict(self)
        data["class"] = data.pop("class_name")
        return data


def _layer_entry(store: ActivationStore, layer: str) -> dict[str, Any]:
    """The store's record of ``layer``, found by its name or its module name."""
    for entry in store.attrs["layers"]:
        if layer in (entry["name"], entry["module"]):
            return entry
    names = ", ".join(e["name"] for e in store.attrs["layers"])
    raise ActstatsError(
        f"--neuron: store {store.path} has no layer {layer!r}; it has {names} "
        "(collect again with --layers to add one)"
    )


def store_unit(store: ActivationStore, spec: NeuronSpec) -> tuple[dict[str, Any], UnitColumns]:
    """The layer record and the columns of the store that hold the unit ``spec``."""
    entry = _layer_entry(store, spec.layer)
    if spec.index is None:
        raise ActstatsError(
            f"--neuron {spec}: a store has no network class names; use the unit's index"
        )
    red = stored_reduction(entry)
    return entry, red.unit_columns(entry["name"], tuple(entry["shape"]), spec.index, spec.yx)


def _class_label(store: ActivationStore, class_name: str | None) -> int | None:
    if class_name is None:
        return None
    names = list(store.attrs["class_names"])
    if class_name not in names:
        shown = ", ".join(names[:20]) + (" ..." if len(names) > 20 else "")
        raise ActstatsError(f"--class {class_name!r}: not a class of the store; it has {shown}")
    return names.index(class_name)


def unit_values(store: ActivationStore, layer: str, columns: np.ndarray) -> da.Array:
    """The unit's value for every row, lazily: the float64 mean of ``columns`` per row."""
    X = da.from_zarr(store.acts(layer))
    return X[:, np.asarray(columns)].astype(np.float64).mean(axis=1)


def row_mask(store: ActivationStore, label: int | None) -> da.Array:
    """Rows that were collected (``images/ok``) and, with ``label``, belong to that class."""
    ok = da.from_zarr(store.group["images/ok"])
    if label is None:
        return ok
    return ok & (da.from_zarr(store.group["images/label"]) == label)


def top_images(
    store: str | os.PathLike | ActivationStore,
    neuron: str | NeuronSpec,
    k: int = 16,
    *,
    class_name: str | None = None,
    scheduler: str = "threads",
    progress: Progress | None = None,
) -> TopImages:
    """Rank the store's images by one unit's value; keep the ``k`` largest and ``k`` smallest.

    Parameters
    ----------
    store : path, URL or opened store
    neuron : ``"fc7:12"``, ``"conv5_3:12"`` (spatial mean) or ``"conv5_3:12@3,4"``
        Layers are named as the store names them (or by their module).
    k : number of images at each end (fewer when the store holds fewer)
    class_name : rank only this class folder's images
    scheduler : a local dask scheduler (``threads``, ``sync``, ``processes``)
    progress : ``progress(done, total)`` over dask tasks

    Ties keep dask's order; ``top`` is sorted from the largest value down,
    ``bottom`` from the smallest up.
    """
    if k < 1:
        raise ActstatsError(f"-k {k}: must be >= 1")
    st = store if isinstance(store, ActivationStore) else open_store(store)
    spec = parse_neuron(neuron) if isinstance(neuron, str) else neuron
    entry, unit = store_unit(st, spec)
    values = unit_values(st, entry["name"], unit.columns)
    rows = row_mask(st, _class_label(st, class_name))
    n_valid = int(rows.sum().compute(scheduler=scheduler))  # reads only images/ok and label
    if n_valid == 0:
        where = f" of class {class_name!r}" if class_name else ""
        raise ActstatsError(f"store {st.path}: no collected images{where}")
    kk = min(k, n_valid)
    mask = rows & ~da.isnan(values)
    with task_progress(progress):
        top_rows, bottom_rows = dask.compute(
            da.argtopk(da.where(mask, values, -np.inf), kk),
            da.argtopk(da.where(mask, -values, -np.inf), kk),
            scheduler=scheduler,
        )
    rankings = [np.asarray(top_rows), np.asarray(bottom_rows)]
    top, bottom = _exemplars(st, values, rankings)
    position = f"@{spec.yx[0]},{spec.yx[1]}" if spec.yx else ""
    return TopImages(
        neuron=f"{entry['name']}:{spec.index}{position}",
        layer=entry["name"],
        unit=unit.description,
        exact=unit.exact,
        class_name=class_name,
        n_images=n_valid,
        top=top,
        bottom=bottom,
        region=unit.region,
    )


def _exemplars(
    st: ActivationStore, values: da.Array, rankings: list[np.ndarray]
) -> list[list[Exemplar]]:
    """Value, path and class of the ranked rows (reads only the chunks that hold them)."""
    rows = np.unique(np.concatenate(rankings))
    got = dask.compute(
        values[rows],
        da.from_zarr(st.group["images/path"])[rows],
        da.from_zarr(st.group["images/label"])[rows],
        scheduler="sync",
    )
    where = {int(r): i for i, r in enumerate(rows)}
    names = list(st.attrs["class_names"])
    return [
        [
            Exemplar(
                rank,
                int(row),
                str(got[1][where[int(row)]]),
                names[int(got[2][where[int(row)]])],
                float(got[0][where[int(row)]]),
            )
            for rank, row in enumerate(ranking, start=1)
        ]
        for ranking in rankings
    ]


def locate(result: TopImages, store: ActivationStore) -> TopImages:
    """``result`` with the input ``box`` its conv position sees (a no-op for whole units).

    The receptive field needs the network's architecture only: it is built from the
    store's ``model`` (no weights are read for torchvision names) and traced with one
    zero image.
    """
    if result.region is None:
        return result
    entry = _layer_entry(store, result.layer)
    pre = Preprocessing.from_dict(store.attrs["preprocessing"])
    model = str(store.attrs["model"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random weights: only the geometry is used
        network = load_network(model, None if ":" in model else "none", preprocessing=pre)
    field = receptive_field(network, entry["module"])
    box = input_box(result.region, tuple(entry["shape"][1:]), pre.crop, field)
    return replace(result, box=box, receptive_field=field is not None)


# ------------------------------------------------------------------ drawing
def load_tiles(
    exemplars: Sequence[Exemplar],
    root: str | os.PathLike,
    preprocessing: Preprocessing,
    box: tuple[int, int, int, int] | None = None,
) -> list[np.ndarray | None]:
    """Each exemplar as the network saw it (uint8 HxWx3), cut to ``box``; None if unreadable."""
    tiles: list[np.ndarray | None] = []
    for ex in exemplars:
        try:
            image = load_image(Path(root) / ex.path)
        except BadImageError:
            tiles.append(None)
            continue
        rgb = preprocessing.to_uint8(preprocessing(image)[None])[0]
        if box is not None:
            x0, y0, x1, y1 = box
            rgb = rgb[y0:y1, x0:x1]
        tiles.append(rgb)
    return tiles


def _draw(result: TopImages, tiles: dict[str, list[np.ndarray | None]], path: Path) -> None:
    """Two blocks of tiles (largest, smallest), each titled with rank, value and class."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(8, max(len(t) for t in tiles.values()))
    blocks = [(name, t, -(-len(t) // cols)) for name, t in tiles.items()]
    n_rows = sum(r for _, _, r in blocks)
    fig, axes = plt.subplots(
        n_rows, cols, figsize=(1.6 * cols, 2.1 * n_rows + 0.6), squeeze=False, dpi=100
    )
    row = 0
    for name, block, rows in blocks:
        exemplars = result.top if name == "largest" else result.bottom
        for i in range(rows * cols):
            ax = axes[row + i // cols][i % cols]
            ax.axis("off")
            if i >= len(block):
                continue
            ex = exemplars[i]
            if block[i] is None:
                ax.text(0.5, 0.5, "unreadable", ha="center", va="center", fontsize=8)
            else:
                ax.imshow(block[i], interpolation="nearest")
            label = f"{name} #{ex.rank}" if i == 0 else f"#{ex.rank}"
            ax.set_title(f"{label}  {ex.value:.3g}\n{ex.class_name}", fontsize=8)
        row += rows
    what = f"{result.neuron} ({result.unit})"
    where = f", class {result.class_name}" if result.class_name else ""
    crop = ""
    if result.box is not None:
        x0, y0, x1, y1 = result.box
        kind = "receptive field" if result.receptive_field else "share of the image"
        crop = f"\ncrops: its {kind}, x {x0}..{x1 - 1}, y {y0}..{y1 - 1} of the network's input"
    fig.suptitle(f"{what}: real images{where}, of {result.n_images}{crop}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _slug(neuron: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", neuron)


def write_top(
    result: TopImages,
    output: str | os.PathLike,
    *,
    root: str | os.PathLike,
    preprocessing: Preprocessing,
) -> tuple[Path, Path]:
    """Write ``top.png`` (the grid) and ``top.json`` (paths, values, ranks) into ``output``."""
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    tiles = {
        "largest": load_tiles(result.top, root, preprocessing, result.box),
        "smallest": load_tiles(result.bottom, root, preprocessing, result.box),
    }
    png, record = out / "top.png", out / "top.json"
    _draw(result, tiles, png)
    data = result.to_json() | {
        "root": str(root),
        "unreadable": [
            ex.path
            for name, exs in (("largest", result.top), ("smallest", result.bottom))
            for ex, t in zip(exs, tiles[name], strict=True)
            if t is None
        ],
    }
    write_atomic(record, json.dumps(data, indent=1))
    return png, record


def run_top(
    store: str | os.PathLike,
    neuron: str,
    k: int,
    output: str | os.PathLike | None,
    *,
    class_name: str | None = None,
    root: str | os.PathLike | None = None,
    progress: Progress | None = None,
) -> tuple[TopImages, Path, Path]:
    """The CLI's one call: rank, locate the receptive field, draw; returns result and files.

    ``output`` defaults to ``top/<neuron>`` beside the store; ``root`` to the data
    root the store recorded at collect time.
    """
    st = open_store(store)
    result = locate(top_images(st, neuron, k, class_name=class_name, progress=progress), st)
    root = root or st.attrs.get("root")
    if not root:
        raise ActstatsError(f"store {st.path}: records no data root; pass --root DIR")
    if output is None:
        base = Path(st.path).parent if "://" not in st.path else Path(".")
        output = base / "top" / _slug(result.neuron + (f"_{class_name}" if class_name else ""))
    pre = Preprocessing.from_dict(st.attrs["preprocessing"])
    png, record = write_top(result, output, root=root, preprocessing=pre)
    return result, png, record
