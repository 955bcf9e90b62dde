"""Fit per-class, per-layer statistics from an activation store (``actstats fit``).

Two streaming passes over the store's rows, each a ``dask.delayed`` task per span of
whole store chunks (about :data:`TASK_BYTES` of the widest layer) whose partial
results are merged per class by a tree reduce:

1. moments (float64, a fused in-place block kernel, Chan et al. merges) per class and
   layer -> Gaussian layer models and PCA bases; ``__all__`` merges the classes'
   moments (no row is accumulated twice);
2. per-unit histograms (quantiles), streamed moments of adjacent layers' reduced
   coordinates (joint models), held-out log-likelihoods, and, with ``mixture``,
   the reduced rows the mixtures are fitted to.

Both passes are one dask graph (the tasks are :mod:`actstats.pipeline.fit_tasks`), so
each class's pass-1 result is computed once and shared by key with the pass-2 tasks that
need it (never copied into every task). The store is read through
:func:`actstats.io.store.open_store`, which checks its metadata against the schema.
Memory is bounded by a chunk plus the per-class results, not by N: no task and no
client ever holds a whole layer. The store and ``output`` may be fsspec URLs; with
``scheduler=ADDRESS`` or ``workers=N`` it runs on dask.distributed (see
:mod:`actstats.pipeline.cluster`). Only rows with
``images/ok`` are used; a deterministic ``holdout`` fraction of each class is kept
out of the fit and scored.

Refusals and warnings: an incomplete store (an interrupted collect) is refused
unless ``allow_incomplete``; the output may not overlap the store; one writer
at a time holds the model directory's lock, and the directory is written
atomically (see :mod:`actstats.io.modelfile`). A class/layer whose model cannot
be trusted -- fewer than 2 images, every image giving the same activations, or a
full covariance from no more images than dimensions -- gets one
:class:`DegenerateClassWarning` naming the class and layer.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dask
import numpy as np

from actstats.errors import ActstatsError
from actstats.io.locks import writer_lock
from actstats.io.modelfile import check_model_output, save_models
from actstats.io.paths import refuse_overlap
from actstats.io.store import ActivationStore, batched_reads, open_store, resolve_location
from actstats.pipeline.fit_tasks import (
    QUANTILE_LEVELS,
    chunk_moments,
    chunk_pass2,
    finish_stage1,
    finish_stage2,
    merge_layer_moments,
    merge_pass2,
    merge_tree,
    pick,
)
from actstats.pipeline.memory import (
    AUTO_RANK,
    MomentPlan,
    default_memory,
    parse_memory,
    plan_moments,
)
from actstats.pipeline.schedule import Progress, check_reachable, compute_options, task_progress
from actstats.stats.gaussian import Moments, parse_cov_spec
from actstats.stats.mixture import parse_mixture_spec
from actstats.stats.modelset import ALL_CLASSES, ModelSet
from actstats.version import __version__

__all__ = ["TASK_BYTES", "DegenerateClassWarning", "FitResult", "fit_store", "store_moments"]


class DegenerateClassWarning(UserWarning):
    """A class/layer model fitted from too few or identical activations."""


@dataclass
class FitResult:
    """What :func:`fit_store` produced: the models, where they went, and a summary table."""

    models: ModelSet
    path: Path | str
    rows: list[dict[str, Any]] = field(default_factory=list)
    #: What the memory budget changed (one line per layer), for the CLI to print.
    notes: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------- planning
@dataclass
class _Plan:
    layers: list[str]
    groups: list[str]  # class keys + ALL_CLASSES
    chunks: list[tuple[int, int]]
    train: list[dict[str, np.ndarray]]  # per chunk: group -> local row indices
    hold: list[dict[str, np.ndarray]]


def _make_plan(
    st: ActivationStore,
    classes: Sequence[str] | None,
    layers: Sequence[str] | None,
    holdout: float,
    seed: int,
) -> _Plan:
    names = [str(c) for c in st.attrs["class_names"]]
    stored = st.layers
    if layers:
        unknown = [ly for ly in layers if ly not in stored]
        if unknown:
            raise ActstatsError(
                f"layer(s) {', '.join(unknown)} not in the store; stored: {', '.join(stored)}"
            )
        layers = [ly for ly in stored if ly in layers]  # keep shallow -> deep order
    else:
        layers = stored
    if classes:
        unknown = [c for c in classes if c not in names]
        if unknown:
            raise ActstatsError(
                f"class(es) {', '.join(unknown)} not in the store; see attrs class_names"
            )
    labels, ok_all, chunk = st.labels(), st.ok(), _task_rows(st, layers)
    wanted = set(classes or names)
    rng = np.random.default_rng(seed)
    is_hold = np.zeros(len(labels), dtype=bool)
    groups = []
    for idx, name in enumerate(names):
        rows = np.flatnonzero(ok_all & (labels == idx))
        if name not in wanted or len(rows) == 0:
            continue
        groups.append(name)
        n_hold = int(len(rows) * holdout) if len(rows) >= 10 else 0
        is_hold[rng.permutation(rows)[:n_hold]] = True
    if not groups:
        raise ActstatsError(f"{st.path}: no usable rows (images/ok) for the selected classes")
    label_group = {i: n for i, n in enumerate(names) if n in groups}
    chunks, train, hold = [], [], []
    for start in range(0, len(labels), chunk):
        stop = min(start + chunk, len(labels))
        lab, ok, h = labels[start:stop], ok_all[start:stop], is_hold[start:stop]
        tr, ho = {}, {}
        for i in np.unique(lab[ok]):
            if int(i) in label_group:
                sel = ok & (lab == i)
                tr[label_group[int(i)]] = np.flatnonzero(sel & ~h)
                ho[label_group[int(i)]] = np.flatnonzero(sel & h)
        if not tr:
            continue
        tr[ALL_CLASSES] = np.sort(np.concatenate(list(tr.values())))
        ho[ALL_CLASSES] = np.sort(np.concatenate(list(ho.values())))
        chunks.append((start, stop))
        train.append(tr)
        hold.append(ho)
    return _Plan(list(layers), [*groups, ALL_CLASSES], chunks, train, hold)


#: Bytes of one layer's rows (in the store dtype) that one task reads at a time: big
#: enough that opening the store and merging results cost little next to the reads and
#: the Gram matrices, small enough that a task's float64 copy stays well under 100 MB.
TASK_BYTES = 32 * 2**20


def _task_rows(st: ActivationStore, layers: Sequence[str]) -> int:
    """Rows per task: whole store chunks, about :data:`TASK_BYTES` of the widest layer."""
    dims = [int(e["dim"]) for e in st.attrs["layers"] if e["name"] in layers]
    row_bytes = max(dims) * np.dtype(st.attrs["dtype"]).itemsize
    return st.chunk_size * max(1, TASK_BYTES // (row_bytes * st.chunk_size))


# -------------------------------------------------------------------------------- driver
def fit_store(
    store: str | os.PathLike,
    output: str | os.PathLike | None,
    *,
    cov: str = "auto",
    mixture: str | int = "0",
    classes: Sequence[str] | None = None,
    layers: Sequence[str] | None = None,
    scheduler: str | None = None,
    seed: int = 0,
    overwrite: bool = False,
    holdout: float = 0.1,
    basis_dim: int = 32,
    full_max_dim: int = 512,
    progress: Progress | None = None,
    workers: int | None = None,
    allow_incomplete: bool = False,
    memory: int | str | None = None,
) -> FitResult:
    """Fit Gaussian (and optionally mixture) models per class and layer, and joint models
    of adjacent layers, from an activation store; save them to ``output``.

    Parameters
    ----------
    store : path-like or str
        Activation store (zarr v3 group written by ``actstats collect``): a local path or
        an fsspec URL (``file://``, ``memory://``, ``s3://`` ...).
    output : path-like, str or None
        Model directory to write, local or an fsspec URL (None: do not save).
    cov : str
        Covariance form: ``full`` (Ledoit-Wolf), ``full:oas``, ``full:empirical``, ``diag``,
        ``lowrank:K`` or ``auto``.
    mixture : str or int
        ``0`` (none), K, or ``auto`` (BIC); mixtures live in a PCA basis of ``basis_dim``.
    classes, layers : sequence of str, optional
        Restrict to these class folder names / stored layers (default: all).
    scheduler : str, optional
        ``threads`` (default), ``sync``, ``processes`` or a dask.distributed address.
    seed : int
        Seeds the held-out split and the mixture fits.
    overwrite : bool
        Replace an existing ``output``.
    holdout : float
        Fraction of each class (with >= 10 rows) kept out of the fit and scored.
    basis_dim : int
        Dimension of the PCA bases of mixtures and joint models.
    full_max_dim : int
        Widest layer ``cov="auto"`` models with a full covariance.
    progress : callable, optional
        ``progress(done_tasks, total_tasks)`` as tasks finish (local schedulers).
    workers : int, optional
        Start a ``LocalCluster`` of this many worker processes for the fit.
    allow_incomplete : bool
        Fit the rows an interrupted collect wrote instead of refusing the store.
    memory : int or str, optional
        Budget for the fit's moments (bytes or ``"4GB"``; default: half the machine's
        memory). Layers whose dense covariance would not fit get low-rank + diagonal
        models from a streamed sketch, or diagonal ones (``cov="auto"``; said in
        ``FitResult.notes``); an explicit ``full`` that cannot fit is refused
        (:func:`actstats.pipeline.memory.plan_moments`).

    Returns
    -------
    FitResult
        ``models`` (a :class:`~actstats.stats.modelset.ModelSet`), ``path`` and per class/layer
        summary ``rows``.
    """
    parse_cov_spec(cov)  # bad specs fail before any work
    parse_mixture_spec(mixture)
    if not 0.0 <= holdout < 1.0:
        raise ActstatsError(f"holdout {holdout} must be in [0, 1)")
    check_reachable(os.fspath(store), scheduler, workers)
    args = locals()
    if output is None:
        return _fit(store, None, args)
    refuse_overlap(output, store, "-o")
    with writer_lock(output, "model directory"):
        check_model_output(output, overwrite)
        return _fit(store, output, args)


def _fit(
    store: str | os.PathLike, output: str | os.PathLike | None, args: dict[str, Any]
) -> FitResult:
    """:func:`fit_store` once ``output`` is locked and may be written; ``args`` its options."""
    cov, mixture, seed, holdout = args["cov"], args["mixture"], args["seed"], args["holdout"]
    form, _ = parse_cov_spec(cov)
    mix = parse_mixture_spec(mixture)
    st = _open_complete(store, args["allow_incomplete"])
    plan = _make_plan(st, args["classes"], args["layers"], holdout, seed)
    basis_dim, full_max_dim = args["basis_dim"], args["full_max_dim"]
    scheduler, workers, progress = args["scheduler"], args["workers"], args["progress"]
    memory = args["memory"]
    budget = parse_memory(memory) if isinstance(memory, str) else memory or default_memory()
    dims = {e["name"]: int(e["dim"]) for e in st.attrs["layers"] if e["name"] in plan.layers}
    moments = plan_moments(
        dims,
        cov=form,
        n_groups=len(plan.groups),
        memory=budget,
        threads=1 if scheduler in ("sync", "synchronous") else workers,
        rank=int(parse_cov_spec(cov)[1].get("rank", AUTO_RANK)),
    )
    options = {
        "cov": cov,
        "mixture": mixture,
        "seed": seed,
        "holdout": holdout,
        "basis_dim": basis_dim,
        "full_max_dim": full_max_dim,
        "moments": moments.forms,
    }
    with compute_options(scheduler, workers) as sched, batched_reads():
        graph = _graph(plan, resolve_location(st.path), moments, mix, options)
        with task_progress(progress):
            (finals,) = dask.compute(graph, **sched)
    models = ModelSet(
        {g: cm for g, (cm, _) in finals.items()}, plan.layers, _provenance(st, plan, options)
    )
    rows = [r for _, (_, rs) in finals.items() for r in rs]
    for r in rows:
        if r["degenerate"]:
            message = f"class {r['class']}, layer {r['layer']}: {r['degenerate']}"
            warnings.warn(DegenerateClassWarning(message), stacklevel=3)
    path = _output_path(output)
    if output is not None:
        save_models(models, output, overwrite=args["overwrite"])
    return FitResult(models, path, rows, moments.notes)


def _open_complete(store: str | os.PathLike, allow_incomplete: bool) -> ActivationStore:
    """The store, refused while an interrupted collect has left it incomplete."""
    st = open_store(store)
    if not st.attrs.get("complete", True) and not allow_incomplete:
        done = st.done
        raise ActstatsError(
            f"store {st.path}: incomplete ({int(done.sum())} of {len(done)} chunks written; "
            "collect was interrupted); rerun the same collect command to finish it, or pass "
            "--allow-incomplete to fit the rows it has"
        )
    return st


def _graph(
    plan: _Plan, store: str, moments: MomentPlan, mixture: int | str, options: dict[str, Any]
) -> dict[str, Any]:
    """Both passes as one dask graph: ``{class: delayed (ClassModels, summary rows)}``.

    Each class's pass-1 result is a node of its own, shared by key with the pass-2
    tasks that need it (never copied into every task).
    """
    cov, seed = options["cov"], options["seed"]
    merged = _pass1(plan, store, moments)
    stage1 = {
        g: dask.delayed(finish_stage1)(
            m, cov, options["basis_dim"], options["full_max_dim"], moments.rank
        )
        for g, m in merged.items()
    }
    parts2 = [
        dask.delayed(chunk_pass2)(
            store, plan.layers, span, tr, ho, {g: stage1[g] for g in tr}, mixture != 0
        )
        for span, tr, ho in zip(plan.chunks, plan.train, plan.hold, strict=True)
    ]
    finals = {}
    for g in plan.groups:
        mine = [dask.delayed(pick)(p, g) for p, r in zip(parts2, plan.train, strict=True) if g in r]
        finals[g] = dask.delayed(finish_stage2)(
            g, plan.layers, stage1[g], merge_tree(mine, merge_pass2), mixture, seed
        )
    return finals


def _pass1(plan: _Plan, store: str, moments: MomentPlan) -> dict[str, Any]:
    """Pass 1 as graph nodes: ``{class: delayed {layer: Moments or SketchMoments}}``.

    Tasks accumulate the classes only; ``__all__`` merges the classes' moments (or
    sketches, in the forms ``moments`` planned), so no row's Gram matrix is computed
    twice.
    """
    classes = [g for g in plan.groups if g != ALL_CLASSES]
    parts = [
        dask.delayed(chunk_moments)(
            store,
            plan.layers,
            span,
            {g: r for g, r in rows.items() if g != ALL_CLASSES},
            moments.forms,
            moments.rows,
        )
        for span, rows in zip(plan.chunks, plan.train, strict=True)
    ]
    merged = {}
    for g in classes:
        mine = [dask.delayed(pick)(p, g) for p, r in zip(parts, plan.train, strict=True) if g in r]
        merged[g] = merge_tree(mine, merge_layer_moments)
    merged[ALL_CLASSES] = merge_tree([merged[g] for g in classes], merge_layer_moments)
    return merged


def store_moments(
    store: str | os.PathLike, *, layers: Sequence[str] | None = None, scheduler: str | None = None
) -> dict[str, dict[str, Moments]]:
    """Pass 1 alone: float64 moments of every class (and ``__all__``) and layer of a store.

    The same tasks as :func:`fit_store`'s first pass, with no held-out rows; what
    ``benchmarks/fit.py`` times against ``np.cov``.
    """
    st = open_store(store)
    plan = _make_plan(st, None, layers, 0.0, 0)
    with compute_options(scheduler, None) as sched, batched_reads():
        dense = MomentPlan(dict.fromkeys(plan.layers, "dense"), 0, 0, 0, [])
        (merged,) = dask.compute(_pass1(plan, resolve_location(st.path), dense), **sched)
    return merged


def _output_path(output: str | os.PathLike | None) -> Path | str:
    """``FitResult.path``: a ``Path`` for local output (as before), the URL string otherwise."""
    if output is None:
        return Path()
    text = os.fspath(output)
    return text if "://" in text else Path(text)


def _provenance(st: ActivationStore, plan: _Plan, options: dict[str, Any]) -> dict[str, Any]:
    meta = st.attrs
    return {
        "store": resolve_location(st.path),
        "model": str(meta.get("model", "")),
        "weights": meta.get("weights"),
        "weights_sha256": meta.get("weights_sha256"),
        "layers": [ly for ly in meta["layers"] if ly["name"] in plan.layers],
        "preprocessing": meta.get("preprocessing"),
        "class_names": [str(c) for c in meta["class_names"]],
        "actstats_version": __version__,
        "fit": dict(options)
        | {"quantile_levels": list(QUANTILE_LEVELS), "store_version": meta.get("version")},
    }
