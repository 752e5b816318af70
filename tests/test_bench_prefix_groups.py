"""bench/prefix_groups.py runs on a tiny model, agrees with the ungrouped path and runs fewer layer-rows."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.mark.slow
def test_prefix_groups_bench(tmp_path):
    sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location("bench_prefix_groups", BENCH / "prefix_groups.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    doc = tmp_path / "b.md"
    out = mod.main(["--model", "tiny-llama", "--task", "grammar", "--pairs", "6", "--heads", "6",
                    "--controls", "2", "--tiny_layers", "4", "--doc", str(doc)])
    assert out["layer_rows_ratio"] < 1 and out["max_margin_gap"] < 1e-3
    text = doc.read_text()
    assert "### prefix_groups: certificate-shaped stack, grouped vs not" in text
    assert "`python bench/prefix_groups.py --model tiny-llama" in text
