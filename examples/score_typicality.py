"""Score how typical activations are under a class's fitted model, and find outlying units.

Usage: python examples/score_typicality.py MODELS CLASS LAYER ACTS.npy
       python examples/score_typicality.py            (synthetic demo: fits a toy store first)
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

import actstats
from actstats.pipeline.fit import fit_store


def demo_models(tmp: Path) -> tuple[Path, str, str, np.ndarray]:
    """Fit a toy two-layer store so the example runs without real data."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from _store_factory import linear_chain, make_store

    acts, labels, names = linear_chain(200)
    make_store(tmp / "store.zarr", acts, labels, names)
    fit_store(tmp / "store.zarr", tmp / "models")
    probe = acts["b"][:5].copy()
    probe[0, 1] += 25.0  # one outlying unit
    return tmp / "models", "cat", "b", probe


def main(argv: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        if len(argv) == 4:
            path, cls, layer, X = Path(argv[0]), argv[1], argv[2], np.load(argv[3])
        else:
            path, cls, layer, X = demo_models(Path(tmp))
        model = actstats.load(path)[cls][layer]
        ll = model.score_samples(X)
        d2 = model.mahalanobis(X)
        contrib = model.unit_contributions(X)
        for i in range(len(X)):
            worst = int(np.argmax(contrib[i]))
            print(
                f"row {i}: log-lik {ll[i]:9.2f}  d2 {d2[i]:8.2f}  "
                f"most outlying unit {worst} ({contrib[i, worst]:.1f} of d2)"
            )


if __name__ == "__main__":
    main(sys.argv[1:])
