"""Plain data shipped with the package: JSON Schemas and the ImageNet-1k wnid list.

``schemas/`` at the repository root is the source of truth; ``actstats/resources/schemas``
links to it so the same files are found from a source checkout and from an installed wheel.
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema

__all__ = ["read_text", "schema_path", "validate_json"]


def schema_path(name: str) -> Path:
    """Path of the JSON Schema ``name`` (e.g. ``"store-attrs.schema.json"``)."""
    return Path(str(resources.files(__name__).joinpath("schemas", name)))


def read_text(name: str) -> str:
    """Text of a data file shipped in this package (e.g. ``"imagenet_wnids.txt"``)."""
    return resources.files(__name__).joinpath(name).read_text(encoding="utf-8")


def validate_json(doc: Any, name: str) -> None:
    """Check ``doc`` against the shipped schema ``name``, as ``jsonschema.validate`` does.

    Raises the best-matching :class:`jsonschema.ValidationError`. Why not
    ``jsonschema.validate``: it re-checks the schema itself on every call (58 ms for
    the store's, paid by every fit task that opens the store: 0.47 s of a 2 s fit of
    200k rows); here the schema is read and checked once per process.
    """
    error = jsonschema.exceptions.best_match(_validator(name).iter_errors(doc))
    if error is not None:
        raise error


@functools.cache
def _validator(name: str) -> Any:
    schema = json.loads(schema_path(name).read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)
