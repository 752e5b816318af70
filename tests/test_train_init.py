"""``--model.init``: the rank rule that maps head scores to a start (against a brute-force oracle),
and a tiny Llama whose gates start in the order of its attribution scores on the train split."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import train  # noqa: E402  (the entry point at the repo root)

from kmshc.experiment import Experiment  # noqa: E402
from kmshc.rank.attribution import head_attribution  # noqa: E402
from kmshc.train.init import log_alpha_from_scores, rank_quantiles  # noqa: E402
from kmshc.train.module import GateModule  # noqa: E402
from kmshc.types import KmshcError, read_circuit  # noqa: E402

TINY = str(ROOT / "configs" / "train" / "tiny.yaml")


def oracle_quantiles(values: list[float]) -> list[float]:
    """Mean rank over ties, by counting, scaled to [0, 1]."""
    n = len(values)
    ranks = [sum(w < v for w in values) + (sum(w == v for w in values) - 1) / 2 for v in values]
    return [0.5] * n if n == 1 else [r / (n - 1) for r in ranks]


@pytest.mark.parametrize("seed", range(5))
def test_rank_quantiles_match_the_oracle_on_heavy_tailed_scores_with_ties(seed):
    u = torch.rand(3, 5, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    scores = torch.tan(torch.pi * (u - 0.5))  # Cauchy: heavy tails, like attribution scores
    scores[0, :2] = scores[2, 4]  # a three-way tie
    scores[1, 3] = 0.0
    scores[2, 0] = 0.0
    q = rank_quantiles(scores)
    assert q.shape == scores.shape and q.dtype == torch.float64
    expected = torch.tensor(oracle_quantiles(scores.flatten().tolist()), dtype=torch.float64).view(3, 5)
    torch.testing.assert_close(q, expected)


def test_log_alpha_follows_the_score_order_and_spans_plus_minus_init_log_alpha():
    scores = torch.tensor([[1.0, 2.0, 2.0], [3.0, -50.0, 1e6]])
    la = log_alpha_from_scores(scores, 2.0)
    assert la.shape == (2, 3) and la.dtype == torch.float32
    # ranks: -50 < 1 < 2 = 2 < 3 < 1e6 -> 0, 1, 2.5, 2.5, 4, 5 over N - 1 = 5
    expected = 2.0 * (2 * torch.tensor([[1 / 5, 2.5 / 5, 2.5 / 5], [4 / 5, 0.0, 1.0]]) - 1)
    torch.testing.assert_close(la, expected)
    assert float(la.max()) == 2.0 and float(la.min()) == -2.0
    assert la[0, 1] == la[0, 2]  # tied scores start tied


def test_log_alpha_is_monotone_in_score_and_blind_to_scale():
    scores = torch.randn(4, 6, generator=torch.Generator().manual_seed(1)) ** 3
    la = log_alpha_from_scores(scores, 3.0)
    order = scores.flatten().argsort()
    assert (la.flatten()[order].diff() > 0).all()  # distinct scores: strictly increasing
    # a strictly increasing transform of the scores (their scale, their tails) changes nothing
    torch.testing.assert_close(log_alpha_from_scores(1e3 * scores.sign() * scores.abs() ** 0.25 + 7, 3.0), la)


def test_one_head_or_all_tied_start_at_the_midpoint():
    assert log_alpha_from_scores(torch.tensor([[5.0]]), 3.0).tolist() == [[0.0]]
    assert log_alpha_from_scores(torch.full((2, 3), 0.25), 3.0).abs().max() == 0.0


def test_the_rule_refuses_nan_scores_and_a_non_positive_spread():
    with pytest.raises(KmshcError, match="model.init: the head scores hold a NaN"):
        log_alpha_from_scores(torch.tensor([[0.0, float("nan")]]), 3.0)
    with pytest.raises(KmshcError, match="model.init_log_alpha: .* must be > 0; got 0"):
        log_alpha_from_scores(torch.tensor([[0.0, 1.0]]), 0.0)


def tiny_llama(**kw) -> Experiment:
    return Experiment(model="tiny-llama", task="grammar", n=60, device="cpu", **kw)


@pytest.mark.parametrize("init", ["attribution", "integrated_gradients"])
def test_gates_start_in_the_order_of_the_train_split_attribution(init):
    module = GateModule(tiny_llama(), init=init)
    fresh = tiny_llama()  # the same model and splits, ranked independently on train
    train_scores = head_attribution(fresh.scorer_for("train"), "train", method=init).scores
    ranking = module.gate_init.ranking
    assert ranking.split == "train" and ranking.n == len(fresh.splits["train"].items)
    torch.testing.assert_close(ranking.scores, train_scores)
    la = module.gates.log_alpha.detach()
    assert la.shape == (2, 4) and len(set(train_scores.flatten().tolist())) == 8
    assert la.flatten().argsort().tolist() == train_scores.flatten().argsort().tolist()
    assert float(la.max()) == 3.0 and float(la.min()) == -3.0
    # the ranking's passes are the run's cost before any step, and nothing else is yet
    cost = module.cost_record()
    assert ranking.cost.example_forwards > 0
    assert cost["init"]["example_forwards"] == pytest.approx(ranking.cost.example_forwards, abs=1e-3)
    assert cost["example_forwards"] == cost["init"]["example_forwards"]
    assert module.gate_init.to_dict()["method"] == init and module.hparams.init == init


def test_the_constant_start_is_unchanged_and_costs_nothing():
    module = GateModule(tiny_llama(), init_log_alpha=1.5)
    assert (module.gates.log_alpha == 1.5).all()
    assert "init" not in module.cost_record() and module.gate_init.to_dict() == {"method": "constant",
                                                                                  "init_log_alpha": 1.5}


def test_a_ranked_start_refuses_the_probe_scorer():
    with pytest.raises(KmshcError, match="model.init: attribution needs a differentiable margin"):
        GateModule(tiny_llama(scorer="probe"), init="attribution")


def fit(tmp: Path, *extra: str, name: str = "t"):
    return train.main(["fit", "--config", TINY, "--runs_dir", str(tmp), "--name", name,
                       "--trainer.enable_progress_bar", "false", "--data.experiment.model", "tiny-llama", *extra])


def test_a_bad_init_names_the_field(tmp_path):
    with pytest.raises(KmshcError, match=r"model\.init: expected one of constant, attribution, "
                                         r"integrated_gradients, got 'eap'"):
        fit(tmp_path, "--model.init", "eap")


def test_a_ranked_run_records_its_start_and_counts_the_ranking(tmp_path):
    cli = fit(tmp_path, "--model.init", "attribution", "--trainer.max_steps", "2", "--score_splits", "[]")
    ranking = cli.model.gate_init.ranking
    gates = json.loads((tmp_path / "t" / "gates.json").read_text())
    assert gates["init"]["method"] == "attribution" and gates["init"]["split"] == "train"
    assert gates["init"]["example_forwards"] == pytest.approx(ranking.cost.example_forwards, abs=1e-3)
    parts = gates["cost"]
    assert parts["train"]["example_forwards"] > 0 and parts["init"]["example_forwards"] > 0
    assert parts["example_forwards"] == pytest.approx(sum(parts[k]["example_forwards"]
                                                          for k in ("train", "validation", "init")), abs=1e-3)
    c = read_circuit(tmp_path / "t" / "circuit_learned.json")
    assert c.extra["init"] == gates["init"] and c.example_forwards == parts["example_forwards"]
    assert c.config["train"]["model"]["init"] == "attribution"
