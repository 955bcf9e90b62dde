"""Plain data shipped with the package: JSON Schemas and the ImageNet-1k wnid list.

``schemas/`` at the repository root is the source of truth; ``actstats/resources/schemas``
links to it so the same files are found from a source checkout and from an installed wheel.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

__all__ = ["read_text", "schema_path"]


def schema_path(name: str) -> Path:
    """Path of the JSON Schema ``name`` (e.g. ``"store-attrs.schema.json"``)."""
    return Path(str(resources.files(__name__).joinpath("schemas", name)))


def read_text(name: str) -> str:
    """Text of a data file shipped in this package (e.g. ``"imagenet_wnids.txt"``)."""
    return resources.files(__name__).joinpath(name).read_text(encoding="utf-8")
