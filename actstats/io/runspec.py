"""Run specs: TOML files that record a pipeline's options, validated by JSON Schema.

A spec has one table per stage (``[collect]``, ``[fit]``, ...) whose keys are
the stage's command-line options with ``_`` for ``-``; see
``schemas/run-spec.schema.json`` and ``pipelines/*.toml``. Relative paths are
relative to the spec file, so a spec works from any directory. Flags given on
the command line override the spec.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import jsonschema

from actstats.errors import ActstatsError
from actstats.resources import validate_json

__all__ = ["load_run_spec", "merge_collect_options"]

_PATH_KEYS = ("root", "store")


def load_run_spec(path: str | Path) -> dict[str, Any]:
    """Parse and validate a run spec; relative paths become absolute."""
    path = Path(path)
    try:
        spec = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ActstatsError(f"run spec {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:  # a directory, no permission, not text
        raise ActstatsError(f"run spec {path}: cannot read it ({exc}); pass a .toml file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ActstatsError(f"run spec {path}: not valid TOML ({exc})") from None
    try:
        validate_json(spec, "run-spec.schema.json")
    except jsonschema.ValidationError as exc:
        field = ".".join(str(p) for p in exc.absolute_path) or "(top)"
        raise ActstatsError(f"run spec {path}: {field}: {exc.message}") from None
    base = path.resolve().parent
    collect = spec.get("collect", {})
    for key in _PATH_KEYS:
        if key in collect and "://" not in collect[key]:  # URLs (s3://, memory://) stay as given
            collect[key] = str(base / Path(collect[key]).expanduser())
    weights = collect.get("weights")
    if weights and weights not in ("imagenet", "none") and not Path(weights).is_absolute():
        collect["weights"] = str(base / weights)
    classes = collect.get("classes")
    if isinstance(classes, str) and (base / classes).is_file():
        collect["classes"] = str(base / classes)
    return spec


def merge_collect_options(source: str | Path, flags: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments for :func:`actstats.pipeline.collect.collect` from SOURCE and flags.

    ``source`` is a data root or a ``.toml`` run spec; ``flags`` are the
    command-line values, ``None`` where not given. Returns ``root`` and
    ``store`` among the options.
    """
    source = Path(source)
    options: dict[str, Any] = {}
    if source.suffix == ".toml":
        spec = load_run_spec(source)
        if "collect" not in spec:
            raise ActstatsError(f"run spec {source}: has no [collect] table")
        options.update(spec["collect"])
        if "model" in options:  # the run spec's older name of ``network``
            options.setdefault("network", options.pop("model"))
    else:
        options["root"] = str(source)
    options.update({k: v for k, v in flags.items() if v is not None})
    if not options.get("store"):
        raise ActstatsError(
            "collect: no output store; pass -o STORE (or store = ... in the "
            "run spec's [collect] table)"
        )
    return options
