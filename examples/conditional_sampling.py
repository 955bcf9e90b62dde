"""Ancestral sampling of activations: fix one unit of the deepest layer, then draw each
shallower layer from p(z_k | z_k+1).

Usage: python examples/conditional_sampling.py MODELS CLASS UNIT_LAYER:INDEX VALUE
       python examples/conditional_sampling.py       (synthetic demo: fits a toy store first)
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

import actstats
from actstats.pipeline.fit import fit_store


def ancestral(models, cls: str, unit_layer: str, index: int, value: float, n: int = 4):
    """Draw ``n`` activation sets top-down, returning {layer: (n, D)}."""
    cm = models[cls]
    layers = models.layers[: models.layers.index(unit_layer) + 1]
    out = {
        unit_layer: cm.conditional(unit_layer, given=(unit_layer, index)).sample(
            value, n_samples=n, random_state=0
        )
    }
    for below, above in zip(layers[-2::-1], layers[::-1], strict=False):
        out[below] = cm.conditional(below, given=above).sample(out[above], random_state=0)
    return out


def main(argv: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        if len(argv) == 4:
            path, cls = Path(argv[0]), argv[1]
            layer, idx = argv[2].split(":")
            value = float(argv[3])
        else:
            sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
            from _store_factory import linear_chain, make_store

            acts, labels, names = linear_chain(200)
            make_store(Path(tmp) / "store.zarr", acts, labels, names)
            path = fit_store(Path(tmp) / "store.zarr", Path(tmp) / "models").path
            cls, layer, idx, value = "dog", "c", "0", 3.0
        models = actstats.load(path)
        draws = ancestral(models, cls, layer, int(idx), value)
        for name, z in draws.items():
            print(f"{name}: shape {z.shape}, mean per unit {np.round(z.mean(0), 2)}")
        print(f"fixed unit {layer}:{idx} = {draws[layer][:, int(idx)]}")


if __name__ == "__main__":
    main(sys.argv[1:])
