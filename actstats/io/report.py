"""``actstats report RUN_DIR``: one self-contained HTML page for a sampling run.

A run directory holds, anywhere below it, the folders ``actstats sample`` writes
(``samples.json`` + PNGs). Two optional files add to the page: ``run.json``
(``real_root``: class folders of real images to show beside the samples) and
``realism.json`` (what :mod:`actstats.eval.realism` measured; the demo writes both).
A third, ``explain.json`` (the demo's single-image tools on held-out digits:
saliency and localization, inversion with and without the prior, a dream), adds
a section with those images and their measured numbers.

The page shows, per neuron, one row: the real images that drive the unit most
(its exemplars, when the caller passes them in :class:`ReportExtras`; else the
first images of the class folder) and then each method's samples, at a legible
size (click any image to see it enlarged); tables of metrics per method; two
matplotlib plots (NLL per layer by method, with held-out real images' NLL as the
reference line when given, and the target score over the optimization steps);
and the class outliers when given. Plots are written as PNGs beside the page,
and every image is inlined as base64, so the HTML file alone is enough to share,
offline.

A run folder may come from someone else, and inlining copies bytes into a page
that gets shared: an image named by ``samples.json`` or ``explain.json`` is
embedded only if it is a regular file under ``RUN_DIR`` (symlinks resolved), and
a real image only if it lies in its ``real_root`` class folder and is a PNG or
JPEG. Anything else is shown as a one-line note, never read.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from actstats.errors import ActstatsError
from actstats.io.paths import write_atomic
from actstats.synth.methods import METHODS

__all__ = [
    "Picture",
    "ReportExtras",
    "SampleSet",
    "load_run",
    "metrics_rows",
    "plot_nll",
    "plot_target",
    "write_report",
]

#: Methods in the registry's order; ablation labels and unknown methods after them.
_METHOD_ORDER = tuple(METHODS)
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


@dataclass(frozen=True)
class SampleSet:
    """One ``samples.json``: a neuron's samples by one method, with their folder."""

    folder: Path
    neuron: str
    class_name: str
    method: str
    records: list[dict[str, Any]]

    def image_paths(self) -> list[Path]:
        """The sample PNGs, in sample order."""
        return [self.folder / r["file"] for r in self.records]


@dataclass(frozen=True)
class Picture:
    """An image to show (uint8, H x W x 3): ``title`` on hover and enlarged, ``caption`` below."""

    title: str
    image: np.ndarray
    caption: str = ""


@dataclass(frozen=True)
class ReportExtras:
    """What the pipeline measured on real images for the page (each part optional).

    ``exemplars[neuron]``: the unit's top real images from the store; ``real_nll``:
    mean NLL per unit of held-out real images per layer (``real_nll_label`` says
    which images); ``outliers[class]``: the class's least likely real images.
    """

    exemplars: dict[str, list[Picture]] = field(default_factory=dict)
    exemplar_note: str = ""
    real_nll: dict[str, float] = field(default_factory=dict)
    real_nll_label: str = "held-out real images"
    outliers: dict[str, list[Picture]] = field(default_factory=dict)


# ------------------------------------------------------------------ reading
def load_run(run_dir: str | Path) -> tuple[list[SampleSet], dict[str, Any], dict[str, Any]]:
    """Every sample set under ``run_dir``, plus ``run.json`` and ``realism.json`` ({} if absent)."""
    root = Path(run_dir)
    if not root.is_dir():
        raise ActstatsError(
            f"{root}: not a directory; pass the folder `actstats sample` or `actstats demo` wrote"
        )
    sets = [_read_set(p) for p in sorted(root.rglob("samples.json"))]
    if not sets:
        raise ActstatsError(
            f"{root}: no samples.json below it; run `actstats sample ... --out {root}` first"
        )
    sets.sort(key=lambda s: (s.class_name, _method_key(s.method), s.neuron))
    return sets, _read_optional(root / "run.json"), _read_optional(root / "realism.json")


def _read_set(path: Path) -> SampleSet:
    try:
        data = json.loads(path.read_text())
        return SampleSet(
            path.parent,
            str(data["neuron"]),
            str(data.get("class") or data["neuron"]),
            str(data["method"]),
            list(data["samples"]),
        )
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ActstatsError(
            f"{path}: not a samples.json written by `actstats sample` ({type(exc).__name__}: {exc})"
        ) from None


def _read_optional(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        return dict(json.loads(path.read_text()))
    except (json.JSONDecodeError, TypeError, ValueError) as exc:
        raise ActstatsError(f"{path}: not valid JSON ({exc}); delete or rewrite it") from None


def _method_key(method: str) -> tuple[int, str]:
    return (_METHOD_ORDER.index(method) if method in _METHOD_ORDER else len(_METHOD_ORDER), method)


def _methods(sets: Sequence[SampleSet]) -> list[str]:
    return sorted({s.method for s in sets}, key=_method_key)


def _layers(sets: Sequence[SampleSet]) -> list[str]:
    seen: dict[str, None] = {}
    for s in sets:
        for r in s.records:
            seen.update(dict.fromkeys(r.get("nll_per_unit", {})))
    return list(seen)


# ------------------------------------------------------------------ metrics
def metrics_rows(sets: Sequence[SampleSet], realism: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per method: sample means from ``samples.json``, realism summary where measured.

    Keys: ``method``, ``n``, ``target_probability``, ``nll`` ({layer: mean NLL per
    unit}) and, from ``realism.json``'s summary, ``judge_agreement``,
    ``pixel_nll_ratio``, ``diversity_judge``, ``memorization_ratio``, ``frechet_net``,
    ``frechet_judge``.
    """
    summary = realism.get("summary", {})
    layers = _layers(sets)
    rows = []
    for method in _methods(sets):
        recs = [r for s in sets if s.method == method for r in s.records]
        probs = [r["target_probability"] for r in recs if r.get("target_probability") is not None]
        row: dict[str, Any] = {
            "method": method,
            "n": len(recs),
            "target_probability": float(np.mean(probs)) if probs else None,
            "nll": {
                ly: float(
                    np.mean(
                        [r["nll_per_unit"][ly] for r in recs if ly in r.get("nll_per_unit", {})]
                    )
                )
                for ly in layers
            },
        }
        row.update(
            {
                k: v
                for k, v in summary.get(method, {}).items()
                if k
                in (
                    "judge_agreement",
                    "pixel_nll_ratio",
                    "diversity_judge",
                    "diversity_pixels",
                    "memorization_ratio",
                    "frechet_net",
                    "frechet_judge",
                )
            }
        )
        rows.append(row)
    if "real" in summary:  # the real images measured the same way: the floor to compare with
        rows.append(
            {
                "method": "real",
                "n": None,
                "target_probability": summary["real"].get("target_probability"),
                "nll": {},
            }
            | summary["real"]
        )
    return rows


# ------------------------------------------------------------------ plots
def _figure() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_nll(
    sets: Sequence[SampleSet],
    path: str | Path,
    reference: dict[str, float] | None = None,
    reference_label: str = "held-out real images",
) -> Path:
    """Mean NLL per unit at each layer, one line per method; saved as a PNG.

    ``reference`` ({layer: NLL per unit}, e.g. of held-out real images) is drawn as
    a black dashed line: what a real image scores, so a method's distance from it
    reads off the plot.
    """
    plt = _figure()
    layers = _layers(sets)
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=100)
    for method in _methods(sets):
        recs = [r for s in sets if s.method == method for r in s.records]
        means = [np.mean([r["nll_per_unit"][ly] for r in recs]) for ly in layers]
        ax.plot(layers, means, marker="o", label=method)
    if reference:
        ref = [reference.get(ly, np.nan) for ly in layers]
        ax.plot(layers, ref, "k--", marker="s", linewidth=2, label=reference_label)
    ax.set_yscale("symlog")
    ax.set_xlabel("layer")
    ax.set_ylabel("NLL per unit (class model)")
    ax.set_title("Negative log-likelihood of the samples' activations")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def plot_target(sets: Sequence[SampleSet], path: str | Path) -> Path:
    """Target score over the optimization steps: mean over samples per method, with its range."""
    plt = _figure()
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=100)
    for method in _methods(sets):
        hist = [
            r["target_history"]
            for s in sets
            if s.method == method
            for r in s.records
            if r.get("target_history")
        ]
        if not hist:
            continue
        steps = min(len(h) for h in hist)
        H = np.asarray([h[:steps] for h in hist], dtype=np.float64)
        x = np.arange(1, steps + 1)
        (line,) = ax.plot(x, H.mean(axis=0), label=method)
        ax.fill_between(x, H.min(axis=0), H.max(axis=0), color=line.get_color(), alpha=0.15)
    ax.set_xlabel("step")
    ax.set_ylabel("target unit")
    ax.set_title("Target score during optimization")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


# ------------------------------------------------------------------ HTML
def _data_uri(path: Path) -> str:
    kind = "png" if path.suffix.lower() == ".png" else "jpeg"
    return f"data:image/{kind};base64,{base64.b64encode(path.read_bytes()).decode()}"


def _embeddable(path: Path, base: Path, *, image_only: bool = False) -> bool:
    """Whether ``path`` is a regular file under ``base`` (and, with ``image_only``, a
    PNG/JPEG by its header)."""
    try:
        real = path.resolve()
        if not real.is_relative_to(base.resolve()) or not stat.S_ISREG(os.stat(real).st_mode):
            return False
        if image_only:
            from PIL import Image

            with Image.open(real) as im:
                return im.format in ("PNG", "JPEG")
    except (OSError, ValueError):
        return False
    return True


def _array_uri(image: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buf, format="PNG")
    return f"data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}"


def _img(path: Path, title: str, base: Path, *, image_only: bool = False, cls: str = "") -> str:
    """An inline ``<img>`` of ``path`` if it may be embedded (see module docstring)."""
    if not _embeddable(path, base, image_only=image_only):
        why = f"{path.name} is not an image file inside {base.name}"
        return (
            f'<span class="refused">{html.escape(title)}: not embedded ({html.escape(why)})</span>'
        )
    return _img_tag(_data_uri(path), title, cls)


def _img_tag(uri: str, title: str, cls: str = "") -> str:
    klass = f' class="{cls}"' if cls else ""
    t = html.escape(title)
    return f'<img src="{uri}"{klass} title="{t}" alt="{t}">'


def _real_images(
    run: dict[str, Any], run_dir: Path, class_name: str, n: int | None, key: str = "real_root"
) -> list[Path]:
    root = run.get(key)
    if not root:
        return []
    folder = (run_dir / root) / class_name
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)[:n]


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.3g}"
    return html.escape(str(value))


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]], caption: str) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(v)}</td>" for v in row) + "</tr>" for row in rows)
    return (
        f"<table><caption>{html.escape(caption)}</caption><thead><tr>{head}</tr></thead>"
        f"<tbody>{body}</tbody></table>"
    )


def _tables(rows: Sequence[dict[str, Any]], layers: Sequence[str]) -> str:
    main = _table(
        [
            "method",
            "samples",
            "target probability",
            "judge agreement",
            "pixel NLL ratio",
            "diversity (judge features)",
            "memorization (fitted / held-out NN distance)",
        ],
        [
            [
                r["method"],
                r.get("n"),
                r.get("target_probability"),
                r.get("judge_agreement"),
                r.get("pixel_nll_ratio"),
                r.get("diversity_judge"),
                r.get("memorization_ratio"),
            ]
            for r in rows
            if "n" in r  # a reference row with NLLs only appears in the NLL table
        ],
        "Per method (means over samples; realism columns over classes)",
    )
    nll = _table(
        ["method", *layers],
        [[r["method"], *(r["nll"].get(ly) for ly in layers)] for r in rows if r["nll"]],
        "NLL per unit of each layer's activations under the class model",
    )
    out = [main, nll]
    for key, name in (("frechet_net", "optimized network"), ("frechet_judge", "judge network")):
        fd_layers = next((list(r[key]) for r in rows if r.get(key)), [])
        if fd_layers:
            out.append(
                _table(
                    ["method", *fd_layers],
                    [
                        [r["method"], *(r[key].get(ly) for ly in fd_layers)]
                        for r in rows
                        if r.get(key)
                    ],
                    f"Fréchet distance to held-out real activations, {name}",
                )
            )
    return "\n".join(out)


_CSS = """body{font-family:sans-serif;margin:1.5em;max-width:1400px}
img{margin:1px;border:1px solid #ccc}
img.thumb{width:112px;height:112px;object-fit:contain;image-rendering:pixelated;cursor:zoom-in}
.plots img{width:auto;height:auto;border:none}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;padding:2px 8px;
text-align:right}th{background:#eee}caption{text-align:left;font-weight:bold}
.row{display:flex;align-items:center;gap:.5em}.row b{width:7em;text-align:right}
.pair{display:inline-flex;border:1px dashed #999;padding:1px}.neighbours img{width:32px;height:32px}
.neuron{border-top:1px solid #ddd;padding:.4em 0}.neuron h3{margin:.2em 0}
.groups{display:flex;flex-wrap:wrap;gap:.4em 1.4em;align-items:flex-start}
.group{margin:0}.group figcaption{font-size:85%;color:#333;margin-bottom:2px}
.group.real figcaption{font-weight:bold}.imgs{display:grid;grid-template-columns:repeat(4,auto);
gap:2px;justify-content:start}
.tile{margin:0;width:114px}.tile figcaption{font-size:75%;overflow-wrap:anywhere}
.explain figure{display:inline-block;margin:0 .5em;vertical-align:top;max-width:11em}
.explain figure img{width:128px;height:128px;image-rendering:pixelated}figcaption{font-size:85%}
#lightbox{position:fixed;inset:0;background:rgba(0,0,0,.85);display:flex;flex-direction:column;
align-items:center;justify-content:center;z-index:10;cursor:zoom-out}#lightbox[hidden]{display:none}
#lightbox img{width:min(80vw,80vh);height:min(80vw,80vh);object-fit:contain;
image-rendering:pixelated;background:#fff}#lightbox p{color:#fff;font-size:110%}"""

# Click any thumbnail to see it enlarged; click again (or Escape) to close. No network use.
_LIGHTBOX = """<div id="lightbox" hidden><img alt="enlarged"><p></p></div><script>
(function(){var box=document.getElementById('lightbox'),big=box.querySelector('img'),
cap=box.querySelector('p');document.addEventListener('click',function(e){var t=e.target;
if(t.classList&&t.classList.contains('thumb')){big.src=t.src;cap.textContent=t.title;
box.hidden=false;}else if(box.contains(t)){box.hidden=true;}});
document.addEventListener('keydown',function(e){if(e.key==='Escape'){box.hidden=true;}});})();
</script>"""


def _explain_section(explain: dict[str, Any], run_dir: Path) -> str:
    """The single-image tools on held-out digits: images with their measured numbers."""
    parts = []
    for d in explain.get("digits", []):
        files = {k: run_dir / v for k, v in d.get("files", {}).items()}
        loc, inv, dr = d.get("localize", {}), d.get("invert", {}), d.get("dream", {})
        plain, prior = inv.get("inverted", {}), inv.get("inverted_prior", {})
        captions = {
            "input": f"held-out {d.get('class')} ({Path(str(d.get('image'))).name})",
            "saliency": f"saliency of {d.get('neuron')}; its localization box vs the ink "
            f"box: IoU {_fmt(loc.get('iou_ink'))}",
            "localize": "GraphCut localization from the saliency seeds (mask, box in green)",
            "inverted": f"inverted from {inv.get('layer')}, no prior: activation error "
            f"{_fmt(plain.get('relative_error'))}",
            "inverted_prior": f"inverted from {inv.get('layer')} with the class prior "
            f"({', '.join(prior.get('prior_layers', []))}): activation error "
            f"{_fmt(prior.get('relative_error'))}",
            "dream": f"dream at {dr.get('layer')}: energy {_fmt(dr.get('energy_before'))} -> "
            f"{_fmt(dr.get('energy_after'))}",
        }
        figures = "".join(
            f'<figure data-tool="{html.escape(k)}">{_img(files[k], k, run_dir)}'
            f"<figcaption>{html.escape(text)}</figcaption></figure>"
            for k, text in captions.items()
            if k in files and files[k].is_file()
        )
        parts.append(
            f'<div class="explain-digit"><h3>{html.escape(str(d.get("class")))}</h3>{figures}</div>'
        )
    if not parts:
        return ""
    return (
        '<h2>Single-image tools</h2><section class="explain"><p>Saliency (max over channels '
        "of |dS/dI|), GraphCut localization, inversion of one conv layer with and without the "
        "fitted prior, and a short dream, on held-out digits. Activation error: "
        "||phi(x) - phi(x0)||^2 / ||phi(x0)||^2; energy: mean squared activation.</p>"
        + "".join(parts)
        + "</section>"
    )


def _neighbours(s: SampleSet, run: dict[str, Any], run_dir: Path, realism: dict[str, Any]) -> str:
    """Each sample's nearest fitting-half and held-out real image (the memorization check)."""
    measured = realism.get("classes", {}).get(s.class_name, {}).get(s.method, {})
    fit = _real_images(run, run_dir, s.class_name, None, key="fit_root")
    held = _real_images(run, run_dir, s.class_name, None)  # the split realism measured on
    near_fit, near_held = measured.get("nearest_fit"), measured.get("nearest_holdout")
    if not (fit and held and near_fit and near_held):
        return ""

    def near(p: Path, what: str) -> str:
        return _img(p, f"nearest {what} image {p.name}", p.parent, image_only=True)

    pairs = "".join(
        f'<span class="pair">{near(fit[i], "fitting-half")}{near(held[j], "held-out")}</span>'
        for i, j in zip(near_fit, near_held, strict=True)
    )
    return (
        f'<div class="neighbours" data-neighbours-of="{html.escape(s.method)}">'
        f"<b>nearest: fitted | held-out</b>{pairs}</div>"
    )


def _group(caption: str, imgs: Sequence[str], kind: str, method: str = "") -> str:
    data = f' data-method="{html.escape(method)}"' if method else ""
    return (
        f'<figure class="group {kind}"{data}><figcaption>{html.escape(caption)}</figcaption>'
        f'<div class="imgs">{"".join(imgs)}</div></figure>'
    )


def _real_group(
    neuron: str, cls: str, extras: ReportExtras, run: dict[str, Any], run_dir: Path, n_real: int
) -> str:
    """The unit's real exemplars when given, else the first images of the class folder."""
    if neuron in extras.exemplars:
        pics = extras.exemplars[neuron][:n_real]
        imgs = [_img_tag(_array_uri(p.image), p.title, "thumb") for p in pics]
        return _group(f"real exemplars: top {len(pics)} of the store", imgs, "real")
    real = _real_images(run, run_dir, cls, n_real)
    if not real:
        return ""
    imgs = [_img(p, f"real {cls} {p.name}", p.parent, image_only=True, cls="thumb") for p in real]
    return _group(f"real images of {cls}", imgs, "real")


def _gallery(
    sets: Sequence[SampleSet],
    run: dict[str, Any],
    run_dir: Path,
    n_real: int,
    extras: ReportExtras,
    realism: dict[str, Any] | None = None,
) -> str:
    """One row per (class, neuron): real exemplars, then every method's samples."""
    parts = []
    for cls, neuron in sorted({(s.class_name, s.neuron) for s in sets}):
        groups = [_real_group(neuron, cls, extras, run, run_dir, n_real)]
        for s in (s for s in sets if (s.class_name, s.neuron) == (cls, neuron)):
            probs = [r.get("target_probability") for r in s.records]
            imgs = [
                _img(
                    p,
                    f"{s.method} {s.neuron} #{r.get('index')} seed {r.get('seed')} "
                    f"p={_fmt(r.get('target_probability'))}",
                    run_dir,
                    cls="thumb",
                )
                for p, r in zip(s.image_paths(), s.records, strict=True)
            ]
            known = [p for p in probs if p is not None]
            p_text = f", p(target) {np.mean(known):.2f}" if known else ""
            groups.append(_group(f"{s.method}{p_text}", imgs, "method", s.method))
            if s.method.startswith("generator"):
                groups.append(_neighbours(s, run, run_dir, realism or {}))
        parts.append(
            f'<section class="neuron" data-neuron="{html.escape(neuron)}">'
            f"<h3>{html.escape(neuron)} &mdash; class {html.escape(cls)}</h3>"
            f'<div class="groups">{"".join(groups)}</div></section>'
        )
    return "\n".join(parts)


def _outlier_section(extras: ReportExtras) -> str:
    if not extras.outliers:
        return ""
    rows = "".join(
        _group(
            f"{cls}: least likely under its own model",
            [
                f'<figure class="tile">{_img_tag(_array_uri(p.image), p.title, "thumb")}'
                f"<figcaption>{html.escape(p.caption)}</figcaption></figure>"
                for p in pics
            ],
            "outliers",
        )
        for cls, pics in extras.outliers.items()
    )
    return (
        "<h2>Class outliers</h2><p>Real images ranked by the robust z-score of their NLL "
        "under their own class's model at their most atypical layer (mislabelled, corrupt or "
        "off-distribution images come first); below each: its z-score and the unit of its "
        "most atypical layer that adds most to its Mahalanobis distance (hover or click for "
        f'more).</p><div class="groups">{rows}</div>'
    )


def write_report(
    run_dir: str | Path,
    *,
    out: str | Path | None = None,
    n_real: int = 8,
    title: str = "actstats report",
    extras: ReportExtras | None = None,
) -> Path:
    """Write ``report.html`` (and its plot PNGs) for the run in ``run_dir``; return its path."""
    run_dir = Path(run_dir)
    extras = extras or ReportExtras()
    sets, run, realism = load_run(run_dir)
    out = Path(out) if out is not None else run_dir / "report.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    plots = [
        plot_nll(sets, out.parent / "nll_by_layer.png", extras.real_nll, extras.real_nll_label),
        plot_target(sets, out.parent / "target_history.png"),
    ]
    rows = metrics_rows(sets, realism)
    if extras.real_nll:
        rows.append({"method": extras.real_nll_label, "nll": dict(extras.real_nll)})
    buf = io.StringIO()
    buf.write(
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
        f"</title><style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"
    )
    if run.get("description"):
        buf.write(f"<p>{html.escape(str(run['description']))}</p>")
    buf.write(
        "<h2>Samples</h2><p>Per neuron: the real images that drive it most, then each "
        "method's samples. Click an image to enlarge it."
        + (f" {html.escape(extras.exemplar_note)}" if extras.exemplar_note else "")
        + "</p>"
        + _gallery(sets, run, run_dir, n_real, extras, realism)
    )
    buf.write("<h2>Metrics</h2>" + _tables(rows, _layers(sets)))
    if realism.get("definitions"):
        buf.write(
            "<ul>"
            + "".join(
                f"<li><b>{html.escape(k)}</b>: {html.escape(v)}</li>"
                for k, v in realism["definitions"].items()
            )
            + "</ul>"
        )
    buf.write(
        '<h2>Plots</h2><div class="plots">'
        + "".join(_img(p, p.stem, out.parent) for p in plots)
        + "</div>"
    )
    buf.write(_outlier_section(extras))
    buf.write(_explain_section(_read_optional(run_dir / "explain.json"), run_dir))
    buf.write(_LIGHTBOX + "</body></html>")
    write_atomic(out, buf.getvalue())
    return out
