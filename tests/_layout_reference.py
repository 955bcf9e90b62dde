"""Stored rows computed by hand in numpy from a layer's raw output and its true layout.

The reference the layout tests and benchmarks/families.py compare ``collect``'s rows
with: it shares no code with :mod:`actstats.net.reduce` (loops over adaptive-pooling
cells, explicit transposes for each layout).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["reference_row"]


def _cells(s: int, axis_len: int) -> list[tuple[int, int]]:
    return [((i * axis_len) // s, math.ceil((i + 1) * axis_len / s)) for i in range(s)]


def reference_row(raw: np.ndarray, layout: str, reduce: str) -> np.ndarray:
    """The stored row of one image's raw output ``raw`` (no batch axis), by hand."""
    if layout == "NCHW":
        chw, prefix = raw, None
    elif layout == "NHWC":
        chw, prefix = raw.transpose(2, 0, 1), None
    elif layout.startswith("NTC:"):
        p, grid = layout[4:].split("+")
        h, w = map(int, grid.split("x"))
        prefix, tokens = raw[: int(p)], raw[int(p) :]
        chw = tokens.reshape(h, w, -1).transpose(2, 0, 1)
    else:  # NTC without a grid: windows (G, P, C) are tokens
        chw, prefix = None, None
        tokens = raw.reshape(-1, raw.shape[-1])
    parts = []
    for part in reduce.split("+"):
        kind, _, size = part.partition(":")
        if kind == "full" or layout == "NC":
            parts.append(raw.reshape(-1))
        elif kind == "mean":
            parts.append(chw.mean(axis=(1, 2)) if chw is not None else tokens.mean(0))
        elif kind == "cls":
            parts.append(prefix.reshape(-1))
        elif kind == "grid":
            s = int(size)
            _, h, w = chw.shape
            cells = [
                [chw[:, y0:y1, x0:x1].mean(axis=(1, 2)) for x0, x1 in _cells(s, w)]
                for y0, y1 in _cells(s, h)
            ]
            parts.append(np.array(cells).transpose(2, 0, 1).reshape(-1))
        elif kind == "tokens":
            s = int(size)
            segs = [tokens[a:b].mean(0) for a, b in _cells(s, len(tokens))]
            parts.append(np.array(segs).T.reshape(-1))
    return np.concatenate(parts)
