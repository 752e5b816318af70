"""``kmshc tasks``: the verdict rule, the table, and one tiny-model survey run."""
from __future__ import annotations

import pytest
import torch

from kmshc.engine.scoring import Scorer
from kmshc.entry.tasks import Score, TaskRow, markdown, survey_task, verdict
from kmshc.tasks import grammar_task, split_task
from kmshc.tasks.base import merge_splits
from kmshc.engine.tiny import tiny_model


def test_verdict_rule():
    assert verdict(0.95, 0.60) == "usable"
    assert verdict(0.95, 0.80).startswith("no: heads barely matter")
    assert verdict(0.70, 0.20).startswith("no: the model fails it")
    assert verdict(0.70, 0.20, min_full=0.6) == "usable"
    assert verdict(0.80, 0.60) == "usable"  # both bounds are inclusive


def test_markdown_table_has_one_row_per_task_with_gap_and_dash_for_missing_counterfactuals():
    rows = [TaskRow("ioi", 200, Score(0.99, 3.1), Score(0.5, 0.0), Score(0.45, -0.2), Score(0.52, 0.1)),
            TaskRow("grammar", 200, Score(0.6, 0.4), Score(0.5, 0.0), Score(0.55, 0.1), None)]
    text = markdown(rows)
    lines = text.splitlines()
    assert lines[2] == ("| ioi | 200 | 0.990 (+3.10) | 0.500 (+0.00) | 0.450 (-0.20) | 0.520 (+0.10) | +0.540 "
                        "| usable |")
    assert lines[3].startswith("| grammar | 200 |") and "| – | +0.050 | no: the model fails it" in lines[3]


def test_survey_task_matches_separate_scorer_calls():
    model, tok = tiny_model("llama", n_layers=2, n_heads=4)
    task = grammar_task(n=40, seed=1)
    row = survey_task(model, tok, task, limit=30)
    splits = split_task(task, limit=30)
    items = merge_splits(task, splits)
    full, none = torch.ones(2, 4), torch.zeros(2, 4)
    for kind, got in (("zero", row.zero), ("mean", row.mean)):
        out = Scorer(model, tok, items, ablation=kind, train=splits["train"]).outcomes(none)
        assert got.accuracy == pytest.approx(float(out.accuracy[0]))
        assert got.margin == pytest.approx(float(out.margin.mean()), abs=1e-5)
    out = Scorer(model, tok, items, ablation="zero").outcomes(full)
    assert row.full.margin == pytest.approx(float(out.margin.mean()), abs=1e-5)
    assert row.n == 30 and row.counterfactual is None and row.zero.margin != row.mean.margin


def test_cli_prints_and_writes_the_table(tmp_path, capsys):
    from kmshc.cli import main
    out = tmp_path / "t.md"
    assert main(["tasks", "--model", "tiny-llama", "--tasks", "grammar", "--limit", "20", "--no_progress",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed == out.read_text() and printed.splitlines()[2].startswith("| grammar | 20 |")
    assert main(["tasks", "--model", "tiny-llama", "--tasks", "grammar", "--data", str(tmp_path / "no.jsonl")]) == 2
