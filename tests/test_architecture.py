"""The floor plan holds: each folder of actstats/ is a layer, imports point down, no circles.

Reads every module's imports (top-level and inside functions) with ``ast``; nothing
is imported or run.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "actstats"

#: Layer of each top-level part of actstats, bottom (0) to top; a module may import
#: its own layer and the layers below it, never above.
LAYERS = {
    "errors": 0,
    "resources": 0,
    "version": 0,
    "net": 1,
    "stats": 1,
    "synth": 2,
    "explain": 3,
    "eval": 3,
    "io": 4,
    "pipeline": 5,
    "demo": 6,
    "cli": 7,
    "__init__": 8,  # actstats.load reaches io lazily
    "__main__": 8,
}


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _imports(name: str, path: Path) -> set[str]:
    """Absolute names of the actstats modules (or packages) ``path`` imports."""
    found = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "actstats"}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            if base.split(".")[0] == "actstats":
                found.add(base)
                found |= {f"{base}.{a.name}" for a in node.names}
    return found


def _layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS["__init__"] if len(parts) == 1 else LAYERS[parts[1]]


MODULES = _modules()
GRAPH = {
    name: {m for m in _imports(name, path) if m in MODULES and m != name}
    for name, path in MODULES.items()
}


def test_every_part_has_a_layer() -> None:
    tops = {name.split(".")[1] for name in MODULES if "." in name}
    assert tops <= set(LAYERS), sorted(tops - set(LAYERS))


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down(module: str) -> None:
    upward = sorted(m for m in GRAPH[module] if _layer(m) > _layer(module))
    assert not upward, f"{module} imports layers above it: {upward}"


def test_no_import_circles() -> None:
    # Package __init__ files re-export their modules; a package imported by one of its
    # own modules is not a circle of code, so edges into a package's own __init__ are dropped.
    graph = {
        name: {
            m for m in deps if not (name.startswith(m + ".") and MODULES[m].name == "__init__.py")
        }
        for name, deps in GRAPH.items()
    }
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                cycle = [*stack[stack.index(dep) :], dep]
                raise AssertionError("import circle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep)
        stack.pop()
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name)


def test_rich_only_in_cli() -> None:
    users = sorted(
        name
        for name, path in MODULES.items()
        if not name.startswith("actstats.cli")
        and any(
            (isinstance(n, ast.Import) and any(a.name.split(".")[0] == "rich" for a in n.names))
            or (isinstance(n, ast.ImportFrom) and (n.module or "").split(".")[0] == "rich")
            for n in ast.walk(ast.parse(path.read_text()))
        )
    )
    assert not users, f"only actstats.cli may draw with rich; also: {users}"


def test_math_layers_do_no_file_io() -> None:
    """stats/ and synth/ take arrays and tensors: no fsspec, zarr, dask, json or paths."""
    banned = {"fsspec", "zarr", "dask", "jsonschema", "json", "pathlib", "os"}
    offenders = []
    for name, path in MODULES.items():
        if name.split(".")[1:2] not in (["stats"], ["synth"]):
            continue
        for n in ast.walk(ast.parse(path.read_text())):
            roots = []
            if isinstance(n, ast.Import):
                roots = [a.name.split(".")[0] for a in n.names]
            elif isinstance(n, ast.ImportFrom) and not n.level:
                roots = [(n.module or "").split(".")[0]]
            offenders += [f"{name}: {r}" for r in roots if r in banned]
    assert not offenders, offenders
