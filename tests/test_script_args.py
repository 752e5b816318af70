"""The shell scripts hand the benchmarks arguments their parsers accept.

A script is run with ``PY`` pointing at a stub that records its arguments, over run folders that
already hold every output (so the script goes straight to the benchmark call); the recorded
arguments are then parsed by the benchmark itself. A value starting with a dash passed as a
separate word (``--fixed_suffix -fixed``) is read by argparse as an option and fails here.
"""
from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from bench_loader import load_bench

ROOT = Path(__file__).resolve().parents[1]


class Parsed(Exception):
    """Raised in place of the benchmark's work once its arguments have parsed."""


def run_search_cost(tmp_path: Path, **env: str) -> list[list[str]]:
    """Run scripts/search_cost.sh with a recording ``PY``; every call's arguments, in order."""
    stub = tmp_path / "py"
    stub.write_text('#!/bin/sh\n(IFS="$(printf \'\\t\')"; echo "$*") >> "$ARGV_OUT"\n')
    stub.chmod(stub.stat().st_mode | stat.S_IXUSR)
    calls = tmp_path / "calls"
    env = {**os.environ, "PY": str(stub), "ONLY": "ioi", "DOC": "none", "ARGV_OUT": str(calls), **env}
    subprocess.run(["bash", "scripts/search_cost.sh"], cwd=ROOT, env=env, check=True, capture_output=True)
    return [line.split("\t") for line in calls.read_text().splitlines()]


def test_search_cost_script_passes_arguments_the_benchmark_parses(tmp_path, monkeypatch):
    out = tmp_path / "runs"
    for d in ("ioi_s0", "ioi_s0-fixed", "ioi_s0-att"):
        (out / d).mkdir(parents=True)
        (out / d / "circuit_searched.json").write_text("{}")
    (out / "ioi_s0-att" / "gates.json").write_text("{}")
    calls = run_search_cost(tmp_path, OUT=str(out))
    assert len(calls) == 1  # every output exists: nothing is searched again
    script, *argv = calls[0]
    assert script == "bench/search_cost.py"

    bench = load_bench("search_cost")
    seen = {}

    def read_routes(*dirs, fixed_dir=None):
        seen.update(dirs=dirs, fixed=fixed_dir)
        raise Parsed

    monkeypatch.setattr(bench, "read_routes", read_routes)
    with pytest.raises(Parsed):  # a SystemExit here is argparse refusing the script's arguments
        bench.main(argv)
    assert seen["fixed"] == out / "ioi_s0-fixed"
    assert seen["dirs"] == (out / "ioi_s0", out / "ioi_s0", out / "ioi_s0-att")


def test_search_cost_script_skips_the_fixed_n_search_when_asked(tmp_path):
    out = tmp_path / "runs"
    (out / "ioi_s0").mkdir(parents=True)
    (out / "ioi_s0" / "circuit_searched.json").write_text("{}")
    calls = run_search_cost(tmp_path, OUT=str(out), FIXED="0")
    searches = [c for c in calls if c[0] == "search.py"]
    assert searches and all(str(out / "ioi_s0-att") in c for c in searches)  # the attribution route only
    assert not any(str(out / "ioi_s0-fixed") in c for c in calls[:-1])
    (tmp_path / "again").mkdir()
    calls = run_search_cost(tmp_path / "again", OUT=str(out))
    assert any(c[0] == "search.py" and str(out / "ioi_s0-fixed") in c for c in calls)  # FIXED=1: it runs


def test_search_cost_script_ranks_with_the_method_and_flags_asked(tmp_path):
    out = tmp_path / "runs"
    (out / "ioi_s0").mkdir(parents=True)
    (out / "ioi_s0" / "circuit_searched.json").write_text("{}")
    calls = run_search_cost(tmp_path, OUT=str(out), FIXED="0", ATT_METHOD="integrated_gradients",
                            ATT_ARGS="--steps 3 --coverage 0.5", ATT_SUFFIX="-ig")
    rank = next(c for c in calls if c[:3] == ["-m", "kmshc", "rank"])
    from kmshc.cli import build_parser
    args = build_parser().parse_args(rank[2:])
    assert (args.method, args.steps, args.coverage, args.name) == ("integrated_gradients", 3, 0.5, "ioi_s0-ig")
    assert any(c[0] == "search.py" and str(out / "ioi_s0-ig") in c for c in calls)
    assert calls[-1][0] == "bench/search_cost.py" and str(out / "ioi_s0-ig") in calls[-1]
