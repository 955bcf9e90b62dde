"""A fused, in-place streaming kernel for :class:`~actstats.stats.gaussian.Moments`.

Why: fit reads each layer's rows once; per block of rows it needs the mean, the
centred Gram matrix and the two extra sums Ledoit-Wolf needs (``t3``, ``q4``).
Memory passes, not flops, bound this on a CPU (a 200k x 256 float64 copy is 0.4 GB),
so each block is touched as few times as possible:

1. converted to float64 *and* shifted by a fixed reference ``K`` in one pass
   (``K`` is the first block's mean; rows of one class stay close to it);
2. one pass for the squared row norms;
3. one pass for both the column sums and ``t3`` (a single ``2 x n`` by ``n x D``
   product);
4. the Gram matrix added in place by BLAS ``dsyrk`` (one triangle: half the flops
   of a general product, no D x D temporary).

The sums are about ``K``; :meth:`MomentAccumulator.moments` moves them to the mean
once (exact formulas). Shifted sums lose precision when the rows' mean lies far
from ``K`` relative to their spread, so a block whose mean is more than
:data:`MAX_SHIFT` running standard deviations from ``K`` in any unit takes the slow,
exact path instead: its own centred moments merged with the running ones (Chan et
al.), and ``K`` moved to the merged mean. The result equals ``moments_from_array``
of all rows to rounding.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import blas

from actstats.stats.gaussian import Moments, merge_moments, moments_from_array

__all__ = ["MomentAccumulator"]

#: Bytes of float64 rows converted at a time: bounds the temporaries, amortizes the
#: per-block calls (16384 rows at D = 256, 1024 at D = 4096).
BLOCK_BYTES = 32 * 2**20

#: A block whose mean is more than this many running standard deviations from the
#: shift ``K`` (in any unit) is merged exactly instead (precision of the shifted sums:
#: at most a factor 1 + MAX_SHIFT**2 of rounding is lost).
MAX_SHIFT = 2.0


class MomentAccumulator:
    """Running float64 moments of a stream of row blocks (one per thread or task).

    Parameters
    ----------
    dim : int
        Number of columns D.
    diag_only : bool
        Keep only per-unit sums of squares (O(D) memory), as ``moments_from_array``.

    Examples
    --------
    >>> acc = MomentAccumulator(3)
    >>> acc.add(np.arange(12.0).reshape(4, 3))
    >>> acc.moments().n
    4
    """

    def __init__(self, dim: int, *, diag_only: bool = False) -> None:
        self.dim = int(dim)
        self.diag_only = diag_only
        self.n = 0
        self._k = np.zeros(dim)  # the shift K: every sum below is about K
        self._s = np.zeros(dim)  # sum of (x - K)
        # sum of (x - K)(x - K)^T; Fortran order: BLAS updates the upper triangle in place
        self._g = np.zeros(dim) if diag_only else np.zeros((dim, dim), order="F")
        self._t3 = np.zeros(dim)  # sum ||x - K||^2 (x - K)
        self._q4 = 0.0  # sum ||x - K||^4
        self._tr = 0.0  # sum ||x - K||^2
        self._buf = np.empty((0, dim))  # reused float64 block: no page faults per block
        self.vmin = np.full(dim, np.inf)
        self.vmax = np.full(dim, -np.inf)

    def add(self, X: np.ndarray) -> None:
        """Add the rows of ``X`` (array of shape (n, D), any float dtype)."""
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != self.dim:
            raise ValueError(f"rows of shape {X.shape} do not have {self.dim} columns")
        if len(X) == 0:
            return
        np.minimum(self.vmin, X.min(axis=0), out=self.vmin)
        np.maximum(self.vmax, X.max(axis=0), out=self.vmax)
        step = max(256, BLOCK_BYTES // (8 * self.dim))
        for start in range(0, len(X), step):
            self._add_block(X[start : start + step])

    def _add_block(self, X: np.ndarray) -> None:
        nb = len(X)
        if self.n == 0:
            self._k = X.mean(axis=0, dtype=np.float64)
        if len(self._buf) < nb:
            self._buf = np.empty((nb, self.dim))
        E = self._buf[:nb]
        np.subtract(X, self._k, out=E)  # float64 and shifted in one pass
        if self.diag_only:
            sb = E.sum(axis=0)
            if self._far(sb / nb):
                return self._merge_exact(X)
            self._s += sb
            self._g += np.einsum("ij,ij->j", E, E)
            self.n += nb
            return
        sq = np.einsum("ij,ij->i", E, E)
        t3b, sb = np.stack([sq, np.ones(nb)]) @ E  # t3 and the column sums in one pass
        if self._far(sb / nb):
            return self._merge_exact(X)
        self._s += sb
        self._t3 += t3b
        self._q4 += float(sq @ sq)
        self._tr += float(sq.sum())
        blas.dsyrk(1.0, E.T, beta=1.0, c=self._g, overwrite_c=1)
        self.n += nb

    def _far(self, offset: np.ndarray) -> bool:
        """Is a block mean ``K + offset`` more than MAX_SHIFT running sds from ``K``?"""
        if self.n == 0:
            return False
        var = self._diag() / self.n - (self._s / self.n) ** 2
        return bool(np.any(offset**2 > MAX_SHIFT**2 * np.maximum(var, 0.0)))

    def _diag(self) -> np.ndarray:
        return self._g if self.diag_only else np.diagonal(self._g)

    def _merge_exact(self, X: np.ndarray) -> None:
        """Slow path: merge the block's own centred moments; ``K`` becomes the new mean."""
        m = merge_moments(self._central(), moments_from_array(X, diag_only=self.diag_only))
        self.n, self._k, self._s = m.n, m.mean, np.zeros(self.dim)
        if self.diag_only:
            self._g = m.m2.copy()
        else:
            self._g = np.asfortranarray(m.m2)
            assert m.t3 is not None and m.q4 is not None
            self._t3, self._q4, self._tr = m.t3.copy(), m.q4, float(np.trace(m.m2))

    def _central(self) -> Moments:
        """The running sums moved from ``K`` to the rows' mean ``K + d`` (d = s / n)."""
        n = self.n
        d = self._s / n if n else np.zeros(self.dim)
        mean = self._k + d
        if self.diag_only:
            return Moments(n, mean, self._g - n * d**2, None, None, self.vmin, self.vmax)
        upper = np.triu(self._g)
        g = upper + np.triu(upper, 1).T
        gd, dd = g @ d, float(d @ d)
        m2 = g - n * np.outer(d, d)
        t3 = self._t3 - 2.0 * gd - self._tr * d + 2.0 * n * dd * d
        q4 = (
            self._q4
            + 4.0 * float(d @ gd)
            - 4.0 * float(d @ self._t3)
            + 2.0 * dd * self._tr
            - 3.0 * n * dd**2
        )
        return Moments(n, mean, np.ascontiguousarray(m2), t3, q4, self.vmin, self.vmax)

    def moments(self) -> Moments:
        """The accumulated rows' :class:`Moments` (a copy; the accumulator can go on)."""
        m = self._central()
        return Moments(m.n, m.mean, m.m2, m.t3, m.q4, self.vmin.copy(), self.vmax.copy())
