"""Attribution ranking: the gradient matches finite differences of the gate, the starting-set
rule, the gates.json a warm search starts from, and the ``kmshc rank`` verb."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

import kmshc.engine.readout
from kmshc.rank.attribution import head_attribution, starting_set
from kmshc.cli import main as kmshc_main
from kmshc.engine.scoring import Scorer
from kmshc.search.gates_file import read_gates
from kmshc.tasks import grammar_task
from kmshc.tasks.base import LabelItem, Task
from kmshc.engine.tiny import tiny_model
from kmshc.types import KmshcError, read_circuit

REPO = Path(__file__).resolve().parents[1]
L, H = 3, 4
PROMPTS = Task("l", "labels", tuple(LabelItem(f"{a} + {b} = {a + b + i % 2}. Answer:", i % 2)
                                    for i, (a, b) in enumerate([(3, 4), (2, 5), (1, 1), (6, 2), (4, 4), (5, 3)])),
               labels=(" True", " False"))


@pytest.fixture
def float64_logits(monkeypatch):
    """Scorers form logits in float32; in float64 a finite difference resolves the first order."""
    monkeypatch.setattr(kmshc.engine.readout, "logits_from_hidden", lambda model, h: model.get_output_embeddings()(h).double())


def split_metric(scorer: Scorer, gates: torch.Tensor) -> float:
    """The mean margin over the scorer's split under (fractional) gates ``[L, H]``."""
    with torch.no_grad():
        total = sum(scorer.batch_margins(b, gates[None]).sum() for b in scorer.data.batches(scorer.batch_size))
    return float(total) / scorer.n


@pytest.mark.parametrize("task,scorer_name,ablation", [(grammar_task(n=12, seed=3), "pair_logprob", "mean"),
                                                       (grammar_task(n=12, seed=3), "pair_logprob", "zero"),
                                                       (PROMPTS, "label_tokens", "mean")])
def test_attribution_is_the_derivative_of_the_metric_along_each_gate(float64_logits, task, scorer_name, ablation):
    model, tok = tiny_model("gpt2", n_layers=L, n_heads=H)  # LayerNorm + float64: no float32 step inside
    scorer = Scorer(model.double(), tok, task, scorer=scorer_name, ablation=ablation, train=task, batch_size=5)
    att = head_attribution(scorer)
    assert att.scores.shape == (L, H) and att.n == scorer.n
    d, fd = 1e-5, torch.zeros(L, H, dtype=torch.float64)
    for l in range(L):
        for h in range(H):
            e = torch.zeros(L, H, dtype=torch.float64)
            e[l, h] = d  # central difference: a tiny gate change each way around 1
            fd[l, h] = (split_metric(scorer, 1 + e) - split_metric(scorer, 1 - e)) / (2 * d)
    assert att.scores.abs().median() > 1e-3  # most heads matter, by far more than the tolerance below
    torch.testing.assert_close(att.scores, fd, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("ablation", ["mean", "zero"])
def test_integrated_gradients_add_up_to_the_whole_models_effect(float64_logits, ablation):
    """Completeness: Σ_h A_IG(h) = m(all heads) − m(no head), up to the midpoint rule's O(1/steps²)."""
    task = grammar_task(n=12, seed=3)
    model, tok = tiny_model("gpt2", n_layers=L, n_heads=H)
    scorer = Scorer(model.double(), tok, task, ablation=ablation, train=task, batch_size=5)
    whole = split_metric(scorer, torch.ones(L, H)) - split_metric(scorer, torch.zeros(L, H))
    ig = head_attribution(scorer, method="integrated_gradients", steps=64)
    assert abs(whole) > 1e-4 and ig.method == "integrated_gradients" and ig.steps == 64
    assert float(ig.scores.sum()) == pytest.approx(whole, rel=1e-3)
    plain = head_attribution(scorer)  # the derivative at g = 1 alone does not add up to it
    assert abs(float(plain.scores.sum()) - whole) > 10 * abs(float(ig.scores.sum()) - whole)


def test_integrated_gradients_with_one_step_is_the_derivative_at_half_gates(float64_logits):
    task = grammar_task(n=12, seed=3)
    model, tok = tiny_model("gpt2", n_layers=L, n_heads=H)
    scorer = Scorer(model.double(), tok, task, ablation="mean", train=task, batch_size=5)
    ig = head_attribution(scorer, method="integrated_gradients", steps=1)
    d, fd = 1e-5, torch.zeros(L, H, dtype=torch.float64)
    for l in range(L):
        for h in range(H):
            e = torch.zeros(L, H, dtype=torch.float64)
            e[l, h] = d
            fd[l, h] = (split_metric(scorer, 0.5 + e) - split_metric(scorer, 0.5 - e)) / (2 * d)
    torch.testing.assert_close(ig.scores, fd, rtol=1e-5, atol=1e-8)


def test_integrated_gradients_cost_one_forward_and_backward_per_example_and_step():
    task = grammar_task(n=12, seed=3)
    model, tok = tiny_model("llama", n_layers=L, n_heads=H)
    att = head_attribution(Scorer(model, tok, task, ablation="mean", train=task, batch_size=5),
                           method="integrated_gradients", steps=3)
    assert att.cost.forward_example_forwards == att.cost.backward_example_forwards == 36
    with pytest.raises(KmshcError, match="steps"):
        head_attribution(Scorer(model, tok, task, ablation="mean", train=task), method="integrated_gradients", steps=0)
    with pytest.raises(KmshcError, match="method"):
        head_attribution(Scorer(model, tok, task, ablation="mean", train=task), method="eap")


def test_batch_margins_are_the_scorers_margins():
    task = grammar_task(n=12, seed=3)
    model, tok = tiny_model("llama", n_layers=L, n_heads=H)
    scorer = Scorer(model, tok, task, ablation="mean", train=task, batch_size=5)
    mask = torch.ones(L, H)
    mask[1, 2] = 0
    want = scorer.outcomes(mask).margin[0]
    got = torch.zeros(scorer.n)
    for b in scorer.data.batches(5):
        got[b.examples] = scorer.batch_margins(b, mask[None])[0]
    torch.testing.assert_close(got, want, atol=3e-5, rtol=1e-5)


def test_attribution_costs_one_forward_and_one_backward_per_example():
    task = grammar_task(n=12, seed=3)
    model, tok = tiny_model("llama", n_layers=L, n_heads=H)
    att = head_attribution(Scorer(model, tok, task, ablation="mean", train=task, batch_size=5))
    assert att.cost.forward_example_forwards == att.cost.backward_example_forwards == 12
    assert att.cost.example_forwards == 24


def test_the_probe_scorer_is_refused():
    task = grammar_task(n=12, seed=3)
    model, tok = tiny_model("gpt2", n_layers=L, n_heads=H)
    with pytest.raises(KmshcError, match="probe"):
        head_attribution(Scorer(model, tok, task, scorer="probe", ablation="zero", train=task))


def test_starting_set_covers_a_fraction_of_the_positive_attribution():
    scores = {"L0H0": 3.0, "L0H1": 1.0, "L1H0": -2.0, "L1H1": 0.5, "L2H0": 0.0}
    assert starting_set(scores, 0.75) == ["L0H0", "L0H1"]  # 3 < 0.75·4.5 ≤ 3 + 1
    assert starting_set(scores, 0.6) == ["L0H0"]
    assert starting_set(scores, 1.0) == ["L0H0", "L0H1", "L1H1"]  # never a head with A ≤ 0
    assert starting_set({"L0H0": -1.0}, 0.9) == []
    with pytest.raises(KmshcError, match="coverage"):
        starting_set(scores, 0.0)


# ---------------------------------------------------------------- the verb and the warm start
def rank(tmp_path: Path, *extra: str) -> dict:
    args = ["rank", "--method", "attribution", "--model", "tiny-gpt2", "--task", "grammar", "--n", "300",
            "--runs_dir", str(tmp_path), "--name", "att", *extra]
    return json.loads(_rank_stdout(args))


def test_rank_writes_gates_a_warm_search_starts_from(tmp_path):
    out = rank(tmp_path, "--coverage", "0.5")
    path = tmp_path / "att" / "gates.json"
    record = json.loads(path.read_text())
    exp, gates, ranks = read_gates(path.parent)
    assert exp.task == "grammar" and exp.model == "tiny-gpt2" and set(gates) == set(ranks) and len(gates) == 8
    start = starting_set(ranks, 0.5)
    assert {h for h, g in gates.items() if g > 0.5} == set(start) and out["start_size"] == len(start)
    assert [h for h, _ in out["top"]] == sorted(ranks, key=lambda h: (-ranks[h], h))
    n_train = record["n"]
    assert record["split"] == "train" and n_train == 180
    assert record["cost"]["forward"] == record["cost"]["backward"] == n_train
    spec = importlib.util.spec_from_file_location("search_entry_att", REPO / "search.py")
    search = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(search)
    res = search.main(["--config", str(REPO / "configs/search/tiny.yaml"), "--progress", "false",
                       "--mode", "warm", "--from_run", str(path.parent), "--strategy", "ordered"])
    circ = read_circuit(path.parent / "circuit_searched.json")
    assert res["method"] == "warm" and circ.extra["source"] == str(path) and circ.example_forwards > 0


def test_rank_with_integrated_gradients_records_its_steps_and_their_cost(tmp_path):
    from kmshc.rank.run import read_rank_record
    rank(tmp_path, "--method", "integrated_gradients", "--steps", "2")
    record = json.loads((tmp_path / "att" / "gates.json").read_text())
    assert record["method"] == "integrated_gradients" and record["steps"] == 2
    rec = read_rank_record(tmp_path / "att")
    assert rec.method == "integrated_gradients" and rec.cost.forward == rec.cost.backward == 2 * 180


def test_rank_refuses_to_overwrite_without_the_flag(tmp_path, capsys):
    rank(tmp_path)
    assert kmshc_main(["rank", "--model", "tiny-gpt2", "--task", "grammar", "--n", "300",
                       "--runs_dir", str(tmp_path), "--name", "att"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert rank(tmp_path, "--overwrite")["n"] == 180


def test_rank_reuses_an_earlier_runs_experiment(tmp_path):
    """--experiment_from: the ranking runs on that run's experiment (here n=60, zero ablation), not the flags'."""
    from kmshc.rank.run import read_rank_record
    from kmshc.experiment import Experiment
    from kmshc.types import atomic_write_json
    src = tmp_path / "learned"
    exp = Experiment(model="tiny-gpt2", task="grammar", n=60, ablation="zero", seed=3)
    atomic_write_json(src / "gates.json", {"experiment": exp.to_dict(), "heads": {"L0H0": {"gate": 1.0}}})
    out = json.loads(_rank_stdout(["rank", "--experiment_from", str(src), "--runs_dir", str(tmp_path),
                                   "--name", "att2"]))
    assert out["n"] == 36  # 60 % of 60 items; the flags' default task would give another size
    assert read_gates(tmp_path / "att2")[0] == exp
    rec = read_rank_record(tmp_path / "att2")
    assert rec.n == 36 and rec.cost.forward == rec.cost.backward == 36 and rec.cost.example_forwards == 72
    with pytest.raises(KmshcError, match="a `kmshc rank` run"):
        read_rank_record(src)  # a training run's gates.json carries no ranking cost


def test_rank_refuses_a_task_together_with_experiment_from(tmp_path, capsys):
    assert kmshc_main(["rank", "--experiment_from", str(tmp_path), "--task", "grammar",
                       "--runs_dir", str(tmp_path), "--name", "x"]) == 2
    assert "--experiment_from" in capsys.readouterr().err


def _rank_stdout(args: list[str]) -> str:
    import contextlib
    import io
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert kmshc_main(args) == 0
    return buf.getvalue()
