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


def test_search_cost_script_passes_arguments_the_benchmark_parses(tmp_path, monkeypatch):
    out = tmp_path / "runs"
    for d in ("ioi_s0", "ioi_s0-fixed", "ioi_s0-att"):
        (out / d).mkdir(parents=True)
        (out / d / "circuit_searched.json").write_text("{}")
    (out / "ioi_s0-att" / "gates.json").write_text("{}")
    stub = tmp_path / "py"
    stub.write_text('#!/bin/sh\nprintf "%s\\n" "$@" > "$ARGV_OUT"\n')
    stub.chmod(stub.stat().st_mode | stat.S_IXUSR)
    argv_file = tmp_path / "argv"
    env = {**os.environ, "PY": str(stub), "OUT": str(out), "ONLY": "ioi", "DOC": "none", "ARGV_OUT": str(argv_file)}
    subprocess.run(["bash", "scripts/search_cost.sh"], cwd=ROOT, env=env, check=True, capture_output=True)
    script, *argv = argv_file.read_text().splitlines()
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
