"""Build small activation stores with plain zarr, following the store layout of ``collect``."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import zarr


def make_store(
    path: Path,
    acts: dict[str, np.ndarray],
    labels: np.ndarray,
    class_names: list[str],
    *,
    chunk_size: int = 16,
    ok: np.ndarray | None = None,
    dtype: str = "float32",
) -> Path:
    """Write ``acts`` (layer -> (N, D), shallow to deep) as an activation store at ``path``."""
    n = len(labels)
    ok = np.ones(n, dtype=bool) if ok is None else ok
    g = zarr.open_group(str(path), mode="w")
    n_chunks = -(-n // chunk_size)
    g.attrs["actstats"] = {
        "version": "0.1.0",
        "model": "toy",
        "weights": "none",
        "weights_sha256": None,
        "preprocessing": {"size": 8},
        "layers": [
            {
                "name": k,
                "module": f"m.{i}",
                "reduce": "full",
                "shape": [v.shape[1]],
                "dim": int(v.shape[1]),
            }
            for i, (k, v) in enumerate(acts.items())
        ],
        "class_names": class_names,
        "chunk_size": chunk_size,
        "n_images": n,
        "dtype": dtype,
        "complete": True,
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fixed-length strings have no zarr v3 spec yet
        g.create_array(
            "images/path", data=np.array([f"img{i}.png" for i in range(n)]), chunks=(chunk_size,)
        )
    g.create_array("images/label", data=np.asarray(labels, dtype=np.int32), chunks=(chunk_size,))
    g.create_array("images/ok", data=ok, chunks=(chunk_size,))
    g.create_array("images/done", data=np.ones(n_chunks, dtype=bool), chunks=(n_chunks,))
    for name, X in acts.items():
        g.create_array(
            f"acts/{name}", data=np.asarray(X, dtype=dtype), chunks=(chunk_size, X.shape[1])
        )
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
