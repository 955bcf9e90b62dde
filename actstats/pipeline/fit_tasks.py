"""The tasks of the fit graph: per-chunk partial results, their merges, the finalizers.

Pass 1 (:func:`chunk_moments`): moments per class and layer. Pass 2
(:func:`chunk_pass2`): per-unit histograms, the rows' coordinates in each layer's PCA
basis (joint moments of adjacent layers, and the rows themselves for mixtures) and
held-out log-likelihoods, as a :class:`Pass2` per class. Partial results merge
pairwise (:func:`merge_tree`); :func:`finish_stage1` and :func:`finish_stage2` turn
the merged results into fitted models. Every task reads its chunk through the store
API (:func:`actstats.io.store.open_store`).
"""

from __future__ import annotations

import functools
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import dask
import numpy as np
from threadpoolctl import ThreadpoolController

from actstats.io.store import open_store
from actstats.stats.accumulate import MomentAccumulator
from actstats.stats.chain import fit_joint_gaussian, fit_joint_mixture
from actstats.stats.gaussian import (
    GaussianLayerModel,
    Moments,
    fit_gaussian,
    merge_moments,
    moments_from_array,
    top_eigen,
)
from actstats.stats.histogram import histogram, histogram_quantiles
from actstats.stats.mixture import fit_mixture
from actstats.stats.modelset import ClassModels
from actstats.stats.sketch import (
    SketchMoments,
    fit_gaussian_sketch,
    merge_sketches,
    sketch_basis,
    sketch_from_array,
)

__all__ = [
    "QUANTILE_LEVELS",
    "Pass2",
    "Stage1",
    "chunk_moments",
    "chunk_pass2",
    "finish_stage1",
    "finish_stage2",
    "merge_layer_moments",
    "merge_pass2",
    "merge_tree",
    "pick",
    "take_rows",
]

#: Bytes of a layer's rows a pass-1 task reads at a time, the next piece being read
#: while this one is accumulated (:meth:`~actstats.io.store.ActivationStore.read_ahead`).
PIECE_BYTES = 8 * 2**20

#: Quantile levels stored per unit and class (``quantiles_`` rows).
QUANTILE_LEVELS = (0.05, 0.5, 0.95, 0.99)


def _one_blas_thread(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run a chunk task with one BLAS thread.

    dask already runs one task per core; letting every task's BLAS start its own
    threads as well oversubscribes the cores (measured on 2 cores: streaming moments
    1.04 s -> 0.74 s for 200k x 256 rows).
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with _threadpools().limit(limits=1):
            return fn(*args, **kwargs)

    return wrapper


@functools.cache
def _threadpools() -> ThreadpoolController:
    """One controller per process: ``threadpool_limits`` scans the loaded libraries on
    every call (~2 ms a task); a controller scans once, at the first task (BLAS and
    OpenMP are loaded by then: numpy, scipy and scikit-learn are imported here)."""
    return ThreadpoolController()


@_one_blas_thread
def chunk_moments(
    store_path: str,
    layers: list[str],
    span: tuple[int, int],
    rows: dict[str, np.ndarray],
    forms: dict[str, str],
    sketch_rows: int,
) -> dict[str, dict[str, Moments | SketchMoments]]:
    """Pass 1 on rows ``span`` of the store: ``{class: {layer: moments}}``.

    ``forms[layer]`` (from :func:`actstats.pipeline.memory.plan_moments`) says which:
    dense or diagonal :class:`Moments`, or a :class:`SketchMoments` of ``sketch_rows``.
    ``rows[g]``: class ``g``'s rows, relative to ``span`` and sorted (as the plan makes
    them). The store is opened once and each layer's rows read once; dense and diagonal
    moments go through one fused accumulator per class
    (:class:`~actstats.stats.accumulate.MomentAccumulator`), fed in pieces of
    :data:`PIECE_BYTES` read ahead of it.
    """
    store = open_store(store_path)
    out: dict[str, dict[str, Moments | SketchMoments]] = {g: {} for g in rows}
    for layer in layers:
        if forms[layer] == "sketch":
            X = np.asarray(store.acts(layer)[slice(*span)])
            for g, r in rows.items():
                out[g][layer] = sketch_from_array(take_rows(X, r), sketch_rows)
            continue
        dim = store.acts(layer).shape[1]
        accs = {g: MomentAccumulator(dim, diag_only=forms[layer] == "diag") for g in rows}
        for start, X in store.read_ahead(layer, span, PIECE_BYTES):
            offset = start - span[0]  # the piece's first row, relative to the span
            for g, r in rows.items():
                lo, hi = np.searchsorted(r, [offset, offset + len(X)])
                accs[g].add(take_rows(X, r[lo:hi] - offset))
        for g, acc in accs.items():
            out[g][layer] = acc.moments()
    return out


def take_rows(X: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``X[rows]``, as a view when ``rows`` is one contiguous run (the usual case: the
    store is sorted by class)."""
    if len(rows) and rows[-1] - rows[0] + 1 == len(rows):
        return X[rows[0] : rows[-1] + 1]
    return X[rows]


@dataclass
class Stage1:
    """Pass-1 result of one class: Gaussian models and PCA bases per layer."""

    gaussians: dict[str, GaussianLayerModel]
    bases: dict[str, tuple[np.ndarray, np.ndarray]]
    vrange: dict[str, tuple[np.ndarray, np.ndarray]]
    seconds: dict[str, float]
    degenerate: dict[str, str] = field(default_factory=dict)  # layer -> why it is untrustworthy


@dataclass
class Pass2:
    """Pass-2 partial result of one class over some rows, per layer.

    ``hist`` per-unit histograms; ``z`` the rows' PCA coordinates (kept only when
    mixtures are fitted); ``holdout`` (sum of held-out log-likelihoods, their count);
    ``joint`` moments of adjacent layers' stacked coordinates.
    """

    hist: dict[str, np.ndarray] = field(default_factory=dict)
    z: dict[str, np.ndarray] = field(default_factory=dict)
    holdout: dict[str, tuple[float, int]] = field(default_factory=dict)
    joint: dict[tuple[str, str], Moments] = field(default_factory=dict)


@_one_blas_thread
def chunk_pass2(
    store_path: str,
    layers: list[str],
    span: tuple[int, int],
    train: dict[str, np.ndarray],
    hold: dict[str, np.ndarray],
    stage1: dict[str, Stage1],
    keep_rows: bool,
) -> dict[str, Pass2]:
    """Pass 2 on rows ``span`` of the store: a :class:`Pass2` per class."""
    store = open_store(store_path)
    out = {g: Pass2() for g in train}
    z: dict[str, dict[str, np.ndarray]] = {g: {} for g in train}
    for layer in layers:
        X = np.asarray(store.acts(layer)[slice(*span)], dtype=np.float64)
        for g, r in train.items():
            s1, res = stage1[g], out[g]
            Xg = take_rows(X, r)
            res.hist[layer] = histogram(Xg, *s1.vrange[layer])
            bm, B = s1.bases[layer]
            z[g][layer] = (Xg - bm) @ B
            h = hold[g]
            ll = s1.gaussians[layer].score_samples(take_rows(X, h)).sum() if len(h) else 0.0
            res.holdout[layer] = (float(ll), len(h))
    for g, res in out.items():
        for a, b in itertools.pairwise(layers):
            res.joint[(a, b)] = moments_from_array(np.hstack([z[g][a], z[g][b]]))
        if keep_rows:
            res.z = z[g]
    return out


def merge_tree(items: list[Any], merge: Callable[[Any, Any], Any]) -> Any:
    """Merge delayed partial results pairwise, in a balanced tree of ``dask.delayed`` calls."""
    items = list(items)
    while len(items) > 1:
        items = [
            dask.delayed(merge)(items[i], items[i + 1]) if i + 1 < len(items) else items[i]
            for i in range(0, len(items), 2)
        ]
    return items[0]


def merge_layer_moments(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Pass-1 merge: per layer, the moments (or sketch moments) of the union of the rows."""
    return {
        k: merge_sketches(a[k], b[k])
        if isinstance(a[k], SketchMoments)
        else merge_moments(a[k], b[k])
        for k in a
    }


def merge_pass2(a: Pass2, b: Pass2) -> Pass2:
    """Pass-2 merge: histograms add, rows stack, log-likelihoods and moments combine."""
    return Pass2(
        hist={k: a.hist[k] + b.hist[k] for k in a.hist},
        z={k: np.concatenate([a.z[k], b.z[k]]) for k in a.z},
        holdout={
            k: (a.holdout[k][0] + b.holdout[k][0], a.holdout[k][1] + b.holdout[k][1])
            for k in a.holdout
        },
        joint={k: merge_moments(a.joint[k], b.joint[k]) for k in a.joint},
    )


def pick(d: dict[str, Any], key: str) -> Any:
    """One class's entry of a chunk's result (a graph node of its own)."""
    return d[key]


def finish_stage1(
    moments: dict[str, Moments | SketchMoments],
    cov: str,
    basis_dim: int,
    full_max_dim: int,
    rank: int,
) -> Stage1:
    """Gaussians, PCA bases (top eigenvectors; top-variance units when only diagonal
    moments were kept; the sketch's top directions) and value ranges of one class.

    A layer the memory plan kept as a sketch gets a low-rank (``rank``) + diagonal
    model; one kept diagonal gets a diagonal model whatever ``cov`` asked for. A
    layer whose model cannot be trusted is named in ``degenerate`` with the reason.
    """
    gaussians, bases, vrange, secs, degenerate = {}, {}, {}, {}, {}
    for layer, m in moments.items():
        t0 = time.perf_counter()
        r = int(max(1, min(basis_dim, m.mean.shape[0], m.n - 1)))
        if isinstance(m, SketchMoments):
            gaussians[layer], bases[layer] = fit_gaussian_sketch(m, rank), sketch_basis(m, r)
            why = degenerate_reason(m, gaussians[layer].cov_type_)
            if why:
                degenerate[layer] = why
            vrange[layer] = (m.vmin, m.vmax)
            secs[layer] = time.perf_counter() - t0
            continue
        g = fit_gaussian(m, cov="diag" if m.diag_only else cov, full_max_dim=full_max_dim)
        why = degenerate_reason(m, g.cov_type_)
        if why:
            degenerate[layer] = why
        if m.diag_only:  # no cross moments: axis-aligned basis of the most variable units
            top = np.argsort(m.variances())[::-1][:r]
            B = np.zeros((m.mean.shape[0], r))
            B[top, np.arange(r)] = 1.0
        else:
            B = top_eigen(m.covariance(), r)[1]
        gaussians[layer], bases[layer] = g, (m.mean.copy(), B)
        vrange[layer] = (m.vmin, m.vmax)
        secs[layer] = time.perf_counter() - t0
    return Stage1(gaussians, bases, vrange, secs, degenerate)


def degenerate_reason(m: Moments | SketchMoments, cov_type: str) -> str:
    """Why a model fitted from ``m`` cannot be trusted ("" when it can): fewer than 2
    rows, all rows equal, or a full covariance from no more rows than dimensions."""
    d = m.mean.shape[0]
    if m.n < 2:
        return f"N={m.n}: no variance can be estimated; collect more images of this class"
    scale = max(1.0, float(np.max(np.abs(m.mean))) ** 2)
    if float(np.max(m.variances())) <= 1e-12 * scale:
        return (
            f"all N={m.n} images give the same activations (zero variance); its NLLs are "
            "meaningless: check the folder for duplicates or blank images"
        )
    if cov_type == "full" and m.n <= d:
        return (
            f"N={m.n} <= D={d}: the full covariance rests on shrinkage; collect more images or "
            "pass --cov diag or lowrank:K"
        )
    return ""


def finish_stage2(
    group: str, layers: list[str], s1: Stage1, p2: Pass2, mixture: int | str, seed: int
) -> tuple[ClassModels, list[dict[str, Any]]]:
    """One class's models (quantiles, mixtures, joint models) and its summary rows."""
    mixtures, joints, rows = {}, {}, []
    fit_mixtures = mixture not in (0, "0")
    for layer in layers:
        t0 = time.perf_counter()
        g = s1.gaussians[layer].set_quantiles(
            QUANTILE_LEVELS, histogram_quantiles(p2.hist[layer], *s1.vrange[layer], QUANTILE_LEVELS)
        )
        k_used = None
        if fit_mixtures and g.n_samples_ >= 2:
            mix = fit_mixture(p2.z[layer], *s1.bases[layer], mixture, random_state=seed)
            mixtures[layer] = mix.set_marginals(g)
            k_used = len(mix.weights_)
        row = _summary_row(group, layer, g, k_used, p2.holdout[layer], s1.seconds[layer], t0)
        rows.append(row | {"degenerate": s1.degenerate.get(layer, "")})
    for a, b in itertools.pairwise(layers):
        bases = (*s1.bases[a], *s1.bases[b])
        m = p2.joint[(a, b)]
        if fit_mixtures and m.n >= 2:
            Y = np.hstack([p2.z[a], p2.z[b]])
            joints[(a, b)] = fit_joint_mixture(Y, (a, b), bases, mixture, random_state=seed)
        else:
            joints[(a, b)] = fit_joint_gaussian(m, (a, b), bases)
    return ClassModels(group, layers, s1.gaussians, mixtures, joints), rows


def _summary_row(
    group: str,
    layer: str,
    g: GaussianLayerModel,
    k_used: int | None,
    holdout: tuple[float, int],
    stage1_seconds: float,
    t0: float,
) -> dict[str, Any]:
    ll, n_hold = holdout
    rank = {"full": g.n_features_, "diag": 0}.get(g.cov_type_)
    return {
        "class": group,
        "layer": layer,
        "N": g.n_samples_,
        "D": g.n_features_,
        "cov": g.cov_type_,
        "rank": g.components_.shape[1] if rank is None else rank,
        "mixture": k_used,
        "holdout_n": n_hold,
        "holdout_ll_per_dim": ll / n_hold / g.n_features_ if n_hold else float("nan"),
        "seconds": stage1_seconds + time.perf_counter() - t0,
    }
