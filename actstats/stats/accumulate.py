"""A fused, in-place streaming kernel for :class:`~actstats.stats.gaussian.Moments`.

Why: fit reads each layer's rows once; per block of rows it needs the mean, the
centred Gram matrix and the two extra sums Ledoit-Wolf needs (``t3``, ``q4``).
Building a :class:`Moments` per block and merging pairwise allocates several
D x D matrices per block and runs a full ``E.T @ E``. Here each block is
converted to float64 once, centred at its own mean (exact re-centring: the
Chan et al. shift formulas move the running sums to the new mean), and its Gram
matrix is added in place with BLAS ``dsyrk`` (one triangle: half the flops of a
general product, no D x D temporary); the mean shift is a rank-one ``dsyr``
update of the same triangle. The result equals ``moments_from_array`` of all
rows to rounding.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import blas

from actstats.stats.gaussian import Moments

__all__ = ["MomentAccumulator"]

#: Bytes of float64 rows converted at a time: bounds the temporaries, amortizes the
#: per-block shifts (16384 rows at D = 256, 1024 at D = 4096).
BLOCK_BYTES = 32 * 2**20


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
        self.mean = np.zeros(dim)
        # Fortran order: BLAS updates the upper triangle in place.
        self._m2 = np.zeros(dim) if diag_only else np.zeros((dim, dim), order="F")
        self._t3 = np.zeros(dim)
        self._q4 = 0.0
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
            self._add_block(np.array(X[start : start + step], dtype=np.float64))

    def _add_block(self, E: np.ndarray) -> None:
        """Merge one float64 block (overwritten: centred in place)."""
        nb = len(E)
        mb = E.mean(axis=0)
        E -= mb
        n = self.n + nb
        delta = mb - self.mean  # new mean = mean + delta * nb / n
        da = -delta * (nb / n)  # old mean - new mean
        db = delta * (self.n / n)  # block mean - new mean
        if self.diag_only:
            self._m2 += np.einsum("ij,ij->j", E, E) + (self.n * nb / n) * delta**2
        else:
            sq = np.einsum("ij,ij->i", E, E)
            t3b, q4b, trb = sq @ E, float(sq @ sq), float(sq.sum())
            # shift the running sums (about the old mean) and the block's to the new mean
            if self.n:
                m2d = blas.dsymv(1.0, self._m2, da)
                t3a, q4a = self._shifted(self._t3, self._q4, float(np.trace(self._m2)), m2d, da)
            else:
                t3a, q4a = self._t3, self._q4
            gbd = E.T @ (E @ db)
            t3b, q4b = self._shifted(t3b, q4b, trb, gbd, db, nb)
            self._t3, self._q4 = t3a + t3b, q4a + q4b
            blas.dsyrk(1.0, E.T, beta=1.0, c=self._m2, overwrite_c=1)
            if self.n:
                blas.dsyr(self.n * nb / n, delta, a=self._m2, overwrite_a=1)
        self.mean = self.mean + delta * (nb / n)
        self.n = n

    def _shifted(
        self,
        t3: np.ndarray,
        q4: float,
        tr: float,
        m2d: np.ndarray,
        d: np.ndarray,
        count: int | None = None,
    ) -> tuple[np.ndarray, float]:
        """``t3`` and ``q4`` of ``count`` rows moved from their mean to ``mean - d``."""
        c = self.n if count is None else count
        dd = float(d @ d)
        t3n = t3 + tr * d + 2.0 * m2d + c * dd * d
        q4n = q4 + 4.0 * float(d @ m2d) + c * dd**2 + 4.0 * float(d @ t3) + 2.0 * dd * tr
        return t3n, q4n

    def moments(self) -> Moments:
        """The accumulated rows' :class:`Moments` (a copy; the accumulator can go on)."""
        if self.diag_only:
            return Moments(
                self.n, self.mean.copy(), self._m2.copy(), None, None, self.vmin, self.vmax
            )
        upper = np.triu(self._m2)
        m2 = upper + np.triu(upper, 1).T
        return Moments(
            self.n,
            self.mean.copy(),
            np.ascontiguousarray(m2),
            self._t3.copy(),
            self._q4,
            self.vmin.copy(),
            self.vmax.copy(),
        )
