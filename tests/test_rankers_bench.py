"""bench/rankers.py: the rankings benchmark end to end on a tiny model (one task, one seed, learned
gates, attribution and random, a warm search), its resume, and its tables and goal checks on
constructed curves whose best ranking is known."""
from __future__ import annotations

import json
import math
import sys
import types

import pytest
import torch

from kmshc.compare.curves import random_ranking, topk_curve
from kmshc.toy.ground_truth import Reference
from kmshc.types import head_name

from bench_loader import load_bench

rankers = load_bench("rankers")
steps_mod = sys.modules["rankers_steps"]
report = sys.modules["rankers_report"]

# greater_than: under the tiny tokenizer its counterfactuals keep their sentences' lengths, so both
# ablations are scored; 60 items split 12 / 24 / 24.
TINY = ["--model", "tiny-llama", "--tasks", "greater_than", "--seeds", "0", "--items", "60", "--curve_items", "0",
        "--train_args", "--trainer.max_steps 4", "--search_args", "--epsilon 0.9 --max_evaluations 30"]
RANKED = ["gates", "attribution", "random"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("rankers")
    argv = [*TINY, "--rankings", *RANKED, "--out", str(out), "--md", str(out / "table.md")]
    return out, argv, rankers.main(argv)


@pytest.mark.slow
def test_every_ranking_is_in_the_table_with_finite_areas(run):
    out, _, result = run
    assert result["failures"] == []
    md = (out / "table.md").read_text()
    for name in RANKED:
        assert f"| {name} | 1 |" in md
        rec = json.loads((out / "greater_than" / "s0" / f"{name}.json").read_text())
        assert set(rec["curves"]) == {"mean", "counterfactual"}
        for c in rec["curves"].values():
            assert math.isfinite(c["cpr"]) and math.isfinite(c["cmd"]) and c["ks"] == [0, 1, 2, 3, 4, 6, 8]
            assert c["faithfulness"][0] == 0 and c["faithfulness"][-1] == pytest.approx(1)
        assert sorted(rec["order"]) == sorted(head_name(l, h) for l in range(2) for h in range(4))
    gates = json.loads((out / "greater_than" / "s0" / "gates.json").read_text())
    assert gates["example_forwards"] > 0 and gates["run"].endswith("runs/gates")
    assert all((out / f"greater_than_curves_{ab}.png").is_file() for ab in ("mean", "counterfactual"))


@pytest.mark.slow
def test_seed_zero_searches_from_the_gates_and_the_best_training_free_ranking(run):
    out, _, result = run
    searches = result["results"]["greater_than"]["searches"]
    assert set(searches) == {"gates", "attribution"}  # random is the floor, never searched
    for s in searches.values():
        assert s["verdict"] in ("verified", "refuted", "undecided") and s["evaluations"] >= 1
        assert s["example_forwards"] > 0 and s["size"] == len(s["heads"])
    goals = result["results"]["greater_than"]["goals"]
    assert any("learned gates have the lowest CMD" in g for g in goals)
    assert all(g.endswith((": met", ": missed")) or "not measured" in g for g in goals)
    assert "forward selection" in goals[-1] and "not measured" in goals[-1]  # not among the rankings run


@pytest.mark.slow
def test_a_rerun_skips_every_finished_step_and_new_sizes_rescore_only_the_curves(run, monkeypatch, capsys):
    out, argv, _ = run

    def boom(*a, **k):
        raise AssertionError("a finished step ran again")
    for name in ("rank", "run_entry", "ranking_curve", "endpoint_scores"):
        monkeypatch.setattr(steps_mod, name, boom)
    again = rankers.main(argv)
    assert again["failures"] == [] and "ran again" not in capsys.readouterr().out
    assert all(r.get("skipped") for recs in again["results"]["greater_than"]["steps"].values() for r in recs)
    monkeypatch.undo()
    monkeypatch.setattr(steps_mod, "rank", boom)
    monkeypatch.setattr(steps_mod, "run_entry", boom)
    rescored = rankers.main([*argv, "--ks", "2", "0.5"])
    assert rescored["failures"] == []
    rec = json.loads((out / "greater_than" / "s0" / "attribution.json").read_text())
    assert rec["curves"]["mean"]["ks"] == [0, 2, 4, 8]


def curve_record(name: str, order: list[str], score, seed: int = 0, forwards: float = 0.0) -> dict:
    c = topk_curve(order, score, [0, 1, 2, 3, 4, 6, 8], 2, 4, label=name)
    return {"task": "t", "seed": seed, "ranking": name, "order": order, "start": None, "example_forwards": forwards,
            "wall_s": 0.0, "curves": {"mean": c.to_dict()}}


HEADS = [head_name(l, h) for l in range(2) for h in range(4)]
WEIGHTS = torch.tensor([0.5 ** i for i in range(8)]).view(2, 4)  # L0H0 matters most


def additive(masks):
    return (masks * WEIGHTS).sum((1, 2))


def test_true_scores_beat_random_and_an_overshooting_ranking_is_named():
    truth = sorted(HEADS, key=lambda h: -float(WEIGHTS.flatten()[HEADS.index(h)]))
    steps = {"gates": [curve_record("gates", truth, additive)],
             "random": [curve_record("random", random_ranking(2, 4, s), additive, seed=s) for s in range(3)]}
    st = {n: report.stats(r, ["mean"]) for n, r in steps.items()}
    assert max(st["gates"]["mean"]["cmd"]) < min(st["random"]["mean"]["cmd"])
    goals = report.goal_checks("t", steps, {}, "mean")
    assert goals[0].endswith(": met") and goals[1].endswith(": met")

    def overshoot(masks):  # L1H3 alone beats the full model: its curve passes 1 early
        kept = masks.flatten(1)
        return additive(masks) + 3.0 * kept[:, 7] * (1 - kept[:, :7].sum(1) / 7)
    steps["peaky"] = [curve_record("peaky", ["L1H3", *truth[:-1]], overshoot)]
    steps["gates"] = [curve_record("gates", truth, overshoot)]
    st = {n: report.stats(r, ["mean"]) for n, r in steps.items()}
    over = report.overshooting(st, "mean")
    assert len(over) == 1 and over[0].startswith("peaky")
    base = {"ablations": {"mean": [1, 0]}, "notes": {}, "items": None, "test_items": 10, "n_layers": 2, "n_heads": 4}
    md = report.task_table("t", steps, {}, base, [0, 1, 2, 3, 4, 6, 8], toy=False)
    assert "Overshoots (mean): peaky" in md and "| random | 3 |" in md
    assert report.goal_checks("t", steps, {}, "mean")[1].endswith("none does: met")  # peaky: higher CMD too
    worse = {"gates": [curve_record("gates", truth[::-1], additive)],
             "attribution": [curve_record("attribution", truth, additive)]}
    goals = report.goal_checks("t", worse, {}, "mean")
    assert goals[0].endswith(": missed") and goals[1].endswith("attribution does: missed")


def test_search_and_route_goals_read_the_floor_and_both_routes():
    steps = {"gates": [{"seed": 0, "example_forwards": 1000.0}],
             "forward_selection": [{"seed": 0, "example_forwards": 300.0}]}
    searches = {"gates": {"evaluations": 9, "size": 4, "example_forwards": 500.0, "verdict": "verified"},
                "forward_selection": {"evaluations": 5, "size": 4, "example_forwards": 900.0, "verdict": "verified"}}
    assert report.route_check("t", steps, searches).endswith("1500 example forwards vs forward selection "
                                                             "(ranking + search) 1200 (1.25×; goal ≤ 1×): missed")
    searches["forward_selection"]["example_forwards"] = 1300.0
    assert report.route_check("t", steps, searches).endswith(": met")
    assert report.search_cells(searches["gates"], 1000.0)[:5] == [9, 5, "500", "1500", 4]  # floor |C| + 1 = 5


def test_toy_goal_needs_the_mechanism_at_every_seed_and_the_precision():
    ref = Reference(previous_token=("L0H1",), induction=("L1H2", "L1H3"))
    good = steps_mod.toy_scores(["L0H1", "L1H2"], ref)
    stray = steps_mod.toy_scores(["L0H1", "L1H2", "L0H0", "L1H0"], ref)
    assert (good["precision"], good["recall"], good["mechanism"]) == (1.0, pytest.approx(2 / 3), True)
    rec = lambda t: {"seed": 0, "toy": {"start": t, "top": t}}  # noqa: E731
    assert report.toy_check("toy", {"gates": [rec(good), rec(good)]}, {}).endswith(": met")
    assert report.toy_check("toy", {"gates": [rec(good), rec(stray)]}, {}).endswith(": missed")  # mean 0.75
    no_prev = steps_mod.toy_scores(["L1H2", "L1H3"], ref)
    assert report.toy_check("toy", {"gates": [rec(no_prev)]}, {}).endswith(": missed")


def test_chg_is_skipped_with_a_clear_line_when_its_package_is_missing(monkeypatch, tmp_path):
    chg = load_bench("rankers_chg")
    monkeypatch.setitem(sys.modules, "causal_head_gating", None)  # import fails
    with pytest.raises(steps_mod.Skip, match="nam-causal-head-gating not installed"):
        chg.chg_run(None, tmp_path, 0)


def test_chg_ranks_by_its_positive_l1_masks(monkeypatch, tmp_path):
    chg = load_bench("rankers_chg")
    necessary = torch.tensor([[0.1, 0.9, 0.2, 0.7], [0.6, 0.0, 0.3, 0.8]])
    ones = torch.ones(1, 1, 2, 4)
    masks = {"positive": necessary[None, None], "negative": ones, "none": ones}
    fake = types.SimpleNamespace(
        CHGDataset=types.SimpleNamespace(from_texts=lambda **k: k),
        CHGAnalyzer=lambda model, tok, device: types.SimpleNamespace(
            fit_dataset=lambda data, **k: types.SimpleNamespace(masks=masks)))
    monkeypatch.setitem(sys.modules, "causal_head_gating", fake)
    from kmshc.experiment import Experiment
    exp = Experiment(model="tiny-llama", task="greater_than", n=20)
    chg.chg_run(exp, tmp_path / "chg", 0)
    ranked = steps_mod.from_run(tmp_path / "chg")
    assert ranked["order"][:4] == ["L0H1", "L1H3", "L0H3", "L1H0"]
    assert ranked["start"] == ["L0H1", "L0H3", "L1H0", "L1H3"] and ranked["example_forwards"] == 0.0


def test_variants_and_curve_sizes_are_read_from_the_command_line(tmp_path):
    args = rankers.parse_args(["--variant", "gates_att=--model.init attribution", "--ks", "5", "0.05",
                               "--out", str(tmp_path)])
    opts = rankers.options(args)
    assert opts.variants == {"gates_att": ("--model.init", "attribution")} and opts.ks == (5, 0.05)
    assert opts.curve_items == 80 and "--max_evaluations" in opts.search_args
    for bad in ("random=--x 1", "noequals"):
        with pytest.raises(SystemExit):
            rankers.options(rankers.parse_args(["--variant", bad]))
