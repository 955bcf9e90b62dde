"""Run specs: every error a user can meet names the file and what is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from actstats.errors import ActstatsError
from actstats.io.runspec import load_run_spec, merge_collect_options


def test_relative_paths_are_relative_to_the_spec(tmp_path: Path) -> None:
    spec = tmp_path / "specs" / "run.toml"
    spec.parent.mkdir()
    spec.write_text('[collect]\nroot = "data"\nstore = "memory://x"\nweights = "w.pth"\n')
    collect = load_run_spec(spec)["collect"]
    assert collect["root"] == str(spec.parent.resolve() / "data")
    assert collect["store"] == "memory://x"
    assert collect["weights"] == str(spec.parent.resolve() / "w.pth")


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (None, r"run spec .*nope.toml: no such file"),
        ("[collect\n", r"run spec .*: not valid TOML"),
        ('[collect]\nroot = "r"\nstore = "s"\nbatch_size = 0\n', r"collect.batch_size: 0 is less"),
        ('[collect]\nroot = "r"\n', r"run spec .*: collect: 'store' is a required property"),
    ],
)
def test_bad_specs_are_refused(tmp_path: Path, text: str | None, match: str) -> None:
    spec = tmp_path / ("nope.toml" if text is None else "run.toml")
    if text is not None:
        spec.write_text(text)
    with pytest.raises(ActstatsError, match=match):
        load_run_spec(spec)


def test_unreadable_spec_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "run.toml"
    folder.mkdir()
    with pytest.raises(ActstatsError, match=r"run spec .*run.toml: cannot read it"):
        load_run_spec(folder)


def test_merge_needs_a_collect_table_and_a_store(tmp_path: Path) -> None:
    spec = tmp_path / "run.toml"
    spec.write_text('[fit]\ncov = "auto"\n')
    with pytest.raises(ActstatsError, match=r"run spec .*: has no \[collect\] table"):
        merge_collect_options(spec, {})
    with pytest.raises(ActstatsError, match="collect: no output store; pass -o STORE"):
        merge_collect_options(tmp_path, {"store": None})
    options = merge_collect_options(tmp_path, {"store": "out.zarr", "per_class": None})
    assert options == {"root": str(tmp_path), "store": "out.zarr"}
