"""Per-unit histograms with equal bins, and quantiles read from them.

Streaming fits cannot sort a layer's values; they add per-chunk histograms on a
per-unit range known from the first pass and read quantiles from the sums.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["HIST_BINS", "histogram", "histogram_quantiles"]

#: Bins per unit.
HIST_BINS = 256


def histogram(X: np.ndarray, lo: np.ndarray, hi: np.ndarray, bins: int = HIST_BINS) -> np.ndarray:
    """Counts of each column of ``X`` (n, D) in ``bins`` equal bins on ``[lo, hi]``: (D, bins).

    Values outside the range go to the first or last bin; a constant unit (``lo == hi``)
    counts everything in its first bin.
    """
    d = X.shape[1]
    width = np.where(hi > lo, hi - lo, 1.0)
    idx = np.clip(((X - lo) / width * bins).astype(np.int64), 0, bins - 1)
    flat = (idx + np.arange(d) * bins).ravel()
    return np.bincount(flat, minlength=d * bins).reshape(d, bins)


def histogram_quantiles(
    counts: np.ndarray, lo: np.ndarray, hi: np.ndarray, levels: Sequence[float]
) -> np.ndarray:
    """Per-unit quantiles from per-unit histograms with equal bins on ``[lo, hi]``.

    Parameters
    ----------
    counts : ndarray of shape (D, B)
    lo, hi : ndarray of shape (D,)
    levels : sequence of float in [0, 1]

    Returns
    -------
    ndarray of shape (len(levels), D), linearly interpolated inside each bin
    (error at most one bin width, ``(hi - lo) / B``).
    """
    d, nb = counts.shape
    cum = np.cumsum(counts, axis=1)
    total = cum[:, -1]
    out = np.empty((len(levels), d))
    width = (hi - lo) / nb
    for i, q in enumerate(levels):
        t = q * total
        b = np.argmax(cum >= t[:, None], axis=1)
        prev = np.where(b > 0, cum[np.arange(d), b - 1], 0)
        cnt = np.maximum(counts[np.arange(d), b], 1)
        frac = np.clip((t - prev) / cnt, 0.0, 1.0)
        out[i] = lo + (b + frac) * width
    return np.where(hi > lo, out, lo)
