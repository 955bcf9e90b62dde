"""Build small activation stores through the store API that ``collect`` writes with."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from actstats.io.store import STORE_VERSION, create_store, finish_store, write_chunk
from actstats.version import __version__


def make_store(
    path: Path,
    acts: dict[str, np.ndarray],
    labels: np.ndarray,
    class_names: list[str],
    *,
    chunk_size: int = 16,
    ok: np.ndarray | None = None,
    dtype: str = "float32",
    layouts: dict[str, tuple[str, list[int]]] | None = None,
    paths: list[str] | None = None,
) -> Path:
    """Write ``acts`` (layer -> (N, D), shallow to deep) as an activation store at ``path``.

    Rows where ``ok`` is False are stored as NaN, as ``collect`` stores skipped files.
    ``layouts`` gives a layer's reduction and original shape (``("grid:2", [C, H, W])``)
    where it is not an fc layer kept in ``full``; ``paths`` the image files (relative).
    """
    n = len(labels)
    layouts = layouts or {}
    ok = np.ones(n, dtype=bool) if ok is None else np.asarray(ok, dtype=bool)
    attrs = {
        "version": STORE_VERSION,
        "actstats_version": __version__,
        "model": "toy",
        "weights": "none",
        "weights_sha256": None,
        "preprocessing": {"resize": 8, "crop": 8, "mean": [0.5], "std": [0.5]},
        "layers": [
            {
                "name": k,
                "module": f"m.{i}",
                "reduce": layouts.get(k, ("full", [int(v.shape[1])]))[0],
                "shape": layouts.get(k, ("full", [int(v.shape[1])]))[1],
                "dim": int(v.shape[1]),
            }
            for i, (k, v) in enumerate(acts.items())
        ],
        "class_names": class_names,
        "chunk_size": chunk_size,
        "n_images": n,
        "dtype": dtype,
        "complete": False,
    }
    store = create_store(
        path, attrs, paths or [f"img{i}.png" for i in range(n)], np.asarray(labels)
    )
    for index, start in enumerate(range(0, n, chunk_size)):
        rows = slice(start, min(n, start + chunk_size))
        chunk = {k: np.where(ok[rows, None], np.asarray(v)[rows], np.nan) for k, v in acts.items()}
        write_chunk(store, index, chunk, ok[rows], ["" if k else "skipped" for k in ok[rows]])
    finish_store(store, [])
    return path


def linear_chain(n_per_class: int = 120, seed: int = 0) -> tuple[dict, np.ndarray, list[str]]:
    """Two classes, layers a (5-D) -> b = a @ M + noise (3-D) -> c (4-D), with a constant unit."""
    rng = np.random.default_rng(seed)
    labels = np.repeat([0, 1], n_per_class)
    a = rng.normal(size=(2 * n_per_class, 5)) + labels[:, None] * 2.0
    b = a @ rng.normal(size=(5, 3)) + 0.5 * rng.normal(size=(len(a), 3))
    c = np.hstack(
        [
            b @ rng.normal(size=(3, 3)) + 0.3 * rng.normal(size=(len(a), 3)),
            np.full((len(a), 1), 1.5),
        ]
    )
    return {"a": a, "b": b, "c": c}, labels, ["cat", "dog"]
