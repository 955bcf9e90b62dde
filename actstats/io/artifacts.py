"""Artifacts a run leaves for people and for the report: sample PNGs, grids, ``samples.json``.

``samples.json`` (one per neuron folder) holds every sample's record
(:meth:`SampleResult.to_json`) and the run's method, seed and parameters;
:func:`read_samples` reads it back (the demo and the report use it).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from actstats.errors import ActstatsError

__all__ = ["SampleResult", "grid", "read_samples", "write_samples"]


@dataclass
class SampleResult:
    """One synthesized image and its measurements (``samples.json`` holds all but ``image``).

    ``image`` is (H, W, 3) uint8. ``target_probability`` is the softmax probability
    of the class the sample is for (None where the network has no class for it);
    ``nll[layer]`` the negative log-likelihood of the image's activations under the
    class model (``nll_per_unit`` divided by the layer's dimension); ``chain_match``
    (ancestral) the mean squared z-distance to the sampled activations per layer.
    ``seconds`` is the whole batch's time, shared by ``batch_size`` samples.
    """

    neuron: str
    class_name: str | None
    method: str
    index: int
    seed: int
    image: np.ndarray
    target_score: float
    target_probability: float | None
    nll: dict[str, float]
    nll_per_unit: dict[str, float]
    steps: int
    seconds: float
    batch_size: int
    parameters: dict[str, Any]
    loss_history: list[float]
    target_history: list[float]
    chain_match: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The JSON record (everything but the pixels)."""
        data = asdict(self)
        data.pop("image")
        data["class"] = data.pop("class_name")
        return data


def write_samples(
    results: Sequence[SampleResult],
    output: str | Path,
    *,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write one neuron's samples: ``sample_NNN.png``, ``grid.png``, ``samples.json``.

    ``extra`` entries go into ``samples.json``'s top level (an ablation's label, say).
    Returns the folder ``output/<neuron>/`` (e.g. ``fc8_207``).
    """
    if not results:
        raise ActstatsError("no samples to write")
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", results[0].neuron)
    folder = Path(output) / slug
    folder.mkdir(parents=True, exist_ok=True)
    records = []
    for r in results:
        name = f"sample_{r.index:03d}.png"
        Image.fromarray(r.image).save(folder / name)
        records.append({"file": name, **r.to_json()})
    Image.fromarray(grid([r.image for r in results])).save(folder / "grid.png")
    summary = {
        "neuron": results[0].neuron,
        "class": results[0].class_name,
        "method": results[0].method,
        "seed": results[0].seed,
        "parameters": results[0].parameters,
        "samples": records,
    } | dict(extra or {})
    (folder / "samples.json").write_text(json.dumps(summary, indent=1))
    return folder


def grid(images: Sequence[np.ndarray], pad: int = 2) -> np.ndarray:
    """Tile (H, W, 3) uint8 images in a near-square grid on white, ``pad`` pixels apart."""
    n = len(images)
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    h, w, _ = images[0].shape
    grid = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, 3), 255, np.uint8)
    for i, img in enumerate(images):
        r, c = divmod(i, cols)
        grid[
            pad + r * (h + pad) : pad + r * (h + pad) + h,
            pad + c * (w + pad) : pad + c * (w + pad) + w,
        ] = img
    return grid


def read_samples(folder: str | Path) -> tuple[dict[str, Any], np.ndarray]:
    """A neuron folder's ``samples.json`` and its sample images as (n, H, W, 3) uint8."""
    folder = Path(folder)
    meta = json.loads((folder / "samples.json").read_text())
    files = [folder / r["file"] for r in meta["samples"]]
    return meta, np.stack([np.asarray(Image.open(p).convert("RGB")) for p in files])
