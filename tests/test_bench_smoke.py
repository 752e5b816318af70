"""Every benchmark script runs end to end on a tiny model and appends its table to the doc.

No timing is asserted (the machine is shared); what must hold is that each script runs, its
fast paths agree with the naive one, and the section it writes names its command.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from bench_loader import BENCH, load_bench

TINY = ["--model", "tiny-llama", "--task", "grammar", "--pairs", "6", "--repeats", "1"]

load = load_bench  # the bench scripts by name


def section(doc: Path, title: str, script: str) -> str:
    text = doc.read_text()
    assert text.startswith("# Benchmarks")
    assert f"### {title}" in text and f"`python bench/{script}.py" in text
    assert re.search(r"peak RSS[a-z ]* \d+ MiB", text)
    return text


@pytest.mark.slow
def test_overhead(tmp_path):
    doc = tmp_path / "b.md"
    ratios = load("overhead").main([*TINY, "--doc", str(doc)])
    assert ratios["no hooks"] == 1.0 and len(ratios) == 6 and all(r > 0 for r in ratios.values())
    section(doc, "overhead: gating hooks vs no hooks", "overhead")


def test_masks_fast_paths_agree_with_naive(tmp_path):
    doc = tmp_path / "b.md"
    result = load("masks").main([*TINY, "--n", "1", "3", "--doc", str(doc)])
    assert {n for n, _ in result} == {1, 3} and len(result) == 10
    text = section(doc, "masks: evaluations per second", "masks")
    err = float(re.search(r"naive path: ([0-9.e+-]+)", text).group(1))
    assert err < 1e-4


@pytest.mark.slow
def test_peer_chg(tmp_path):
    pytest.importorskip("causal_head_gating")
    doc = tmp_path / "b.md"
    out = load("peer_chg").main([*TINY, "--steps", "1", "--chg-batch", "4", "--doc", str(doc)])
    n_heads = 2 * 4  # tiny-llama: 2 layers × 4 heads
    assert all(0 <= size <= n_heads and 0 <= acc <= 1 for size, acc in out.values())
    section(doc, "peer_chg: Causal Head Gating vs kmshc", "peer_chg")


def test_bench_module_writes_atomically_appending(tmp_path):
    common = load("common")
    args = common.parse(common.parser("x"), ["--doc", str(tmp_path / "d.md")], str(BENCH / "x.py"))
    common.report(args, "one", common.table(["a", "b"], [[1, 0.5]]))
    common.report(args, "two", common.table(["a"], [[2]]))
    text = (tmp_path / "d.md").read_text()
    assert text.index("### one") < text.index("### two") and "| 1 | 0.5 |" in text


def test_a_benchmark_writes_a_dated_results_page_by_default(tmp_path, monkeypatch):
    common = load("common")
    monkeypatch.setattr(common, "RESULTS", tmp_path)
    args = common.parse(common.parser("x"), [], str(BENCH / "x.py"))
    common.report(args, "one", common.table(["a"], [[1]]))
    (page,) = tmp_path.glob("*-x.md")
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}-x", page.stem), page.name
    assert page.read_text().startswith("# Benchmarks: x") and "`python bench/x.py`" in page.read_text()


def test_oracle_reports_exact_minimum_rates(tmp_path):
    doc = tmp_path / "b.md"
    out = load("oracle").main(["--seeds", "2", "--model-seeds", "1", "--layers", "3", "--heads", "2", "--model-layers", "3", "--model-heads", "2",
                               "--pairs", "8", "--doc", str(doc)])
    assert {fam for fam, _ in out} >= {"planted or_groups", "planted additive", "planted noisy"}
    text = section(doc, "oracle: searched vs true minimum", "oracle")
    for (fam, name), hit in out.items():  # the share of exact hits over the cases the table reports
        cases = 2 if fam.startswith("planted") else 1
        assert hit * cases == round(hit * cases) and f"| {fam} | {name} | {cases} | {hit:.2f} |" in text
    assert "| 64 |" in text  # 3 × 2 heads: exhaustive search scores 2^6 subsets


@pytest.mark.slow
def test_search_cost_reads_real_tiny_runs(tmp_path):
    """Train tiny gates and refine them (fixed-n and adaptive), rank by attribution and search from
    that ranking, as scripts/search_cost.sh does; then let the benchmark read the three routes."""
    root = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(root))
    import search
    import train
    from kmshc.cli import main as kmshc_main
    train.main(["fit", "--config", str(root / "configs/train/tiny.yaml"), "--runs_dir", str(tmp_path),
                "--name", "t", "--trainer.enable_progress_bar", "false"])
    cfg = ["--config", str(root / "configs/search/tiny.yaml"), "--mode", "warm", "--progress", "false"]
    t, a, r = (str(tmp_path / x) for x in ("t", "a", "r"))
    search.main([*cfg, "--from_run", t])
    search.main([*cfg, "--from_run", t, "--out", a, "--adaptive", "true"])
    assert kmshc_main(["rank", "--experiment_from", t, "--runs_dir", str(tmp_path), "--name", "r"]) == 0
    search.main([*cfg, "--from_run", r])
    doc = tmp_path / "b.md"
    out = load("search_cost").main(["--case", "tiny", t, a, r, "--doc", str(doc)])
    fixed, adaptive, att = (json.loads((tmp_path / x / "circuit_searched.json").read_text()) for x in "tar")
    assert out["tiny"].search_saving == pytest.approx(fixed["example_forwards"] / adaptive["example_forwards"])
    learned = json.loads((tmp_path / "t" / "circuit_learned.json").read_text())
    ranking = json.loads((tmp_path / "r" / "gates.json").read_text())["cost"]["example_forwards"]
    assert out["tiny"].attribution_share == pytest.approx(
        (ranking + att["example_forwards"]) / (learned["example_forwards"] + fixed["example_forwards"]))
    text = doc.read_text()
    assert "### search_cost: forward passes per certified circuit (tiny)" in text and "`python bench/search_cost.py" in text
    assert "| learned + warm, adaptive |" in text and "| attribution + search |" in text


def test_ground_truth_reads_the_bar_of_old_and_new_certificates():
    gt = load("ground_truth")
    assert gt.threshold_of({"threshold": 0.9415}) == 0.9415
    assert gt.threshold_of({"threshold": {"value": 0.8}}) == 0.8
    assert gt.threshold_of({}) is None
