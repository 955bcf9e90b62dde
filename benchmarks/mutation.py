"""Mutation testing of the math and the resume logic, one shard (module) at a time.

``mutmut`` (3.x) mutates the functions of a shard's files, runs only the tests that
call each mutated function (from its own coverage of the shard's test selection) and
records which mutants the tests kill. The shards -- which files, which functions, which
tests -- are in ``pyproject.toml`` under ``[tool.actstats.mutation]``; ``[tool.mutmut]``
there holds the options every shard shares. Each shard runs in its own scratch copy
(``.mutation/<shard>/``) so shards never share mutmut's cache.

Mutants a test cannot kill because they change nothing observable (equivalent mutants)
are listed with the reason in ``benchmarks/mutation_equivalent.toml`` (``[equivalent]``),
and survivors killed by a test written after the run, each checked by planting the
mutant by hand, under ``[killed_by_new_tests]``; the score of a shard is
``killed / (checked - equivalent)``. Everything else that survives is listed in
the report, so a new survivor is visible.

Usage: ``python benchmarks/mutation.py [SHARD ...] [--sample N] [--report-only]``
(``make mutation`` runs every shard). ``--sample N`` runs a seeded random sample of N
mutants per shard when the whole shard would take too long (the report says so).
Writes ``benchmarks/results/mutation-<date>.{md,json}``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import time
import tomllib
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
EQUIVALENT = ROOT / "benchmarks" / "mutation_equivalent.toml"
SCRATCH = ROOT / ".mutation"
STATUS = {1: "killed", 3: "killed", 0: "survived", 5: "no tests", 33: "no tests", 36: "timeout"}
STATUS |= dict.fromkeys((-24, 24, 152, 255), "timeout")  # SIGXCPU: mutmut's time limit


def shards() -> dict[str, dict[str, Any]]:
    """``[tool.actstats.mutation.shards]`` of pyproject.toml."""
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return data["tool"]["actstats"]["mutation"]["shards"]


def _shared_options() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mutmut"]


def _toml_list(values: list[str]) -> str:
    return "[" + ", ".join(json.dumps(v) for v in values) + "]"


def prepare(name: str, shard: dict[str, Any]) -> Path:
    """A scratch copy of the package and tests whose pyproject configures this shard only."""
    work = SCRATCH / name
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    for folder in ("actstats", "tests"):
        shutil.copytree(ROOT / folder, work / folder, ignore=shutil.ignore_patterns("__pycache__"))
    options = _shared_options() | {
        "only_mutate": shard["mutate"],
        "pytest_add_cli_args_test_selection": shard["tests"],
    }
    lines = ["[tool.mutmut]"]
    for key, value in options.items():
        text = _toml_list(value) if isinstance(value, list) else json.dumps(value)
        lines.append(f"{key} = {text}")
    pyproject = (ROOT / "pyproject.toml").read_text().split("[tool.mutmut]")[0]
    (work / "pyproject.toml").write_text(pyproject + "\n".join(lines) + "\n")
    return work


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return env | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _mutmut(work: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "mutmut", *args]
    return subprocess.run(cmd, cwd=work, env=_env(), capture_output=True, text=True)


def results(work: Path) -> dict[str, str]:
    """Mutant name -> status, from mutmut's ``mutants/**/*.meta`` files."""
    out = {}
    for meta in sorted((work / "mutants").rglob("*.meta")):
        for key, code in json.loads(meta.read_text())["exit_code_by_key"].items():
            out[key] = STATUS.get(code, "not checked" if code is None else f"exit {code}")
    return out


def _shard_names(work: Path, shard: dict[str, Any]) -> list[str]:
    functions = shard.get("functions", ["*"])
    return [n for n in results(work) if any(fnmatch(n, f"*{p}__mutmut_*") for p in functions)]


def run_shard(
    name: str, shard: dict[str, Any], sample: int | None, seed: int, *, collect: bool = False
) -> dict[str, Any]:
    """Generate the shard's mutants, run them (all, or a sample), return the tally.

    ``collect`` runs nothing: it tallies the mutants an earlier (interrupted) run of
    this shard checked, in mutmut's order (then not a random sample; the report says so).
    """
    work = SCRATCH / name
    start = time.perf_counter()
    if collect:
        names = _shard_names(work, shard)
        done = {n: s for n, s in results(work).items() if n in set(names)}
        chosen = [n for n, s in done.items() if s != "not checked"]
        proc = subprocess.CompletedProcess([], 0, "collected from an interrupted run", "")
    else:
        work = prepare(name, shard)
        # a first pass with an impossible name generates the mutants and the test map only
        _mutmut(work, "run", "--max-children", "1", "__none__*")
        names = _shard_names(work, shard)
        chosen = (
            sorted(random.Random(seed).sample(names, sample))
            if sample and sample < len(names)
            else names
        )
        proc = _mutmut(work, "run", "--max-children", "1", *chosen)
    status = {n: s for n, s in results(work).items() if n in set(chosen)}
    diffs = {n: _mutmut(work, "show", n).stdout.strip() for n, s in status.items() if s != "killed"}
    return {
        "files": shard["mutate"],
        "functions": shard.get("functions", ["*"]),
        "order": "mutmut's order, first checked (interrupted run)" if collect else "seeded sample",
        "tests": shard["tests"],
        "mutants": len(names),
        "sampled": len(chosen) if len(chosen) < len(names) else None,
        "status": status,
        "diffs": diffs,
        "seconds": time.perf_counter() - start,
        "mutmut_tail": (proc.stdout + proc.stderr)[-2000:],
    }


def score(
    shard: dict[str, Any], equivalent: dict[str, str], later: dict[str, str] | None = None
) -> dict[str, Any]:
    """Killed, survived, equivalent and the score ``killed / (checked - equivalent)``.

    ``later`` names survivors killed by a test added after the run (each checked by
    planting the mutant by hand): they count as killed.
    """
    status = {n: "killed" if n in (later or {}) else s for n, s in shard["status"].items()}
    # a timeout listed as equivalent (a hung worker, checked by hand) is not a kill
    eq = [n for n, s in status.items() if s != "killed" and n in equivalent]
    killed = sum(s in ("killed", "timeout") and n not in eq for n, s in status.items())
    live = [n for n, s in status.items() if s not in ("killed", "timeout") and n not in equivalent]
    checked = len(status) - len(eq)
    return {
        "checked": len(status),
        "killed": killed,
        "equivalent": len(eq),
        "survivors": live,
        "score": killed / checked if checked else float("nan"),
    }


def report(
    runs: dict[str, dict[str, Any]], equivalent: dict[str, str], later: dict[str, str]
) -> str:
    """The markdown report: a score per shard, then every surviving or equivalent mutant."""
    lines = [
        "| shard | files | mutants | checked | killed | equivalent | surviving | score |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, run in runs.items():
        s = score(run, equivalent, later)
        checked = f"{s['checked']}" + (" (sample)" if run["sampled"] else "")
        lines.append(
            f"| {name} | {', '.join(run['files'])} | {run['mutants']} | {checked} | "
            f"{s['killed']} | {s['equivalent']} | {len(s['survivors'])} | {s['score']:.1%} |"
        )
    for name, run in runs.items():
        lines += [
            "",
            f"## {name}",
            "",
            f"Tests: `{' '.join(run['tests'])}`; {run['seconds']:.0f} s."
            + (
                f" {run['sampled']} of {run['mutants']} mutants: {run['order']}."
                if run["sampled"]
                else ""
            ),
        ]
        for n, diff in run["diffs"].items():
            if run["status"][n] == "timeout" and n not in equivalent and n not in later:
                continue
            why = equivalent.get(n)
            verdict = "equivalent" if why else "killed by a new test" if n in later else "survived"
            lines += [
                "",
                f"### {n}: {verdict}",
                "",
                why or later.get(n) or "Not killed and not explained: a gap in the tests.",
                "",
                "```diff",
                "\n".join(diff.splitlines()[-12:]),
                "```",
            ]
    return "\n".join(lines) + "\n"


def main() -> None:
    """Run the shards named (default: all) and write the dated report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("shards", nargs="*")
    parser.add_argument("--sample", type=int, default=None, help="mutants per shard")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--report-only", action="store_true", help="rewrite the report")
    parser.add_argument("--collect", action="store_true", help="tally an interrupted run")
    args = parser.parse_args()
    all_shards = shards()
    names = args.shards or list(all_shards)
    date = datetime.date.today().isoformat()
    out_json = RESULTS / f"mutation-{date}.json"
    runs = json.loads(out_json.read_text())["shards"] if out_json.exists() else {}
    if not args.report_only:
        for name in names:
            print(f"mutation shard {name} ...", flush=True)
            runs[name] = run_shard(
                name, all_shards[name], args.sample, args.seed, collect=args.collect
            )
            print(f"  {score(runs[name], {})['killed']} killed of {len(runs[name]['status'])}")
            # re-read first: another process may have finished a shard meanwhile
            merged = json.loads(out_json.read_text())["shards"] if out_json.exists() else {}
            runs = merged | {name: runs[name]}
            out_json.write_text(json.dumps(_payload(runs), indent=1))
    notes = tomllib.loads(EQUIVALENT.read_text()) if EQUIVALENT.exists() else {}
    text = report(runs, notes.get("equivalent", {}), notes.get("killed_by_new_tests", {}))
    head = (
        f"# Mutation testing ({date})\n\n`python benchmarks/mutation.py` (mutmut 3, one shard "
        f"at a time, {platform.node() or 'this machine'}: {os.cpu_count()} CPUs shared). "
        "Score = killed / (checked - equivalent); equivalent mutants are explained below "
        "(`benchmarks/mutation_equivalent.toml`).\n\n"
    )
    missing = [n for n in all_shards if n not in runs]
    if missing:
        head += f"Shards configured but not run yet: {', '.join(missing)}.\n\n"
    head += "A sample is a seeded random sample, or the first mutants an interrupted run "
    head += "checked (`--collect`).\n\n"
    (RESULTS / f"mutation-{date}.md").write_text(head + text)
    out_json.write_text(json.dumps(_payload(runs), indent=1))
    print(text)


def _payload(runs: dict[str, Any]) -> dict[str, Any]:
    return {"machine": {"platform": platform.platform(), "cpus": os.cpu_count()}, "shards": runs}


if __name__ == "__main__":
    main()
