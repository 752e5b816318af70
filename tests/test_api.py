"""The public API of ``import kmshc``: lazy names, learn/search/certify, Circuit load/save, only_heads."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import kmshc
from kmshc.search import Recorder, cold_search
from kmshc.search.config import SearchConfig
from kmshc.search.decide import RecoveryScores, point_scores
from kmshc.types import KmshcError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def exp() -> kmshc.Experiment:
    return kmshc.Experiment(model="tiny-llama", task="grammar", n=60, ablation="mean")


def test_every_public_name_resolves():
    for name in kmshc.__all__:
        assert getattr(kmshc, name) is not None and name in dir(kmshc)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        kmshc.nope  # noqa: B018


@pytest.mark.slow
def test_import_kmshc_does_not_import_torch():
    code = "import sys, kmshc; print(sorted(m for m in ('torch', 'lightning', 'transformers') if m in sys.modules))"
    r = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(REPO / "src")},
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stderr


def test_only_heads_is_the_scorers_mask(exp):
    """Inside ``only_heads``, the all-heads score equals the score of the circuit's mask."""
    model, _ = exp.loaded
    scorer = exp.scorer_for("val")
    heads = ["L0H1", "L1H2", "L1H3"]
    mask = kmshc.Circuit(model="m", task="t", heads=tuple(heads), n_heads_total=8).mask(*exp.shape)
    full = scorer.outcomes(torch.ones(exp.shape)).margin[0]
    for ablation, values in (("zero", "zero"), ("mean", exp.ablation_values)):
        ref = kmshc.Experiment(**{**exp.to_dict(), "ablation": ablation}).scorer_for("val").outcomes(mask).margin[0]
        with kmshc.only_heads(model, heads, ablation=values):
            inside = scorer.outcomes(torch.ones(exp.shape)).margin[0]
        torch.testing.assert_close(inside, ref)
        assert not torch.allclose(inside, full)
    with pytest.raises(RuntimeError), kmshc.only_heads(model, heads, ablation="zero"):
        raise RuntimeError("inside the block")
    torch.testing.assert_close(scorer.outcomes(torch.ones(exp.shape)).margin[0], full)  # hooks are gone


def test_only_heads_refuses_batch_dependent_ablation(exp):
    model, _ = exp.loaded
    with pytest.raises(KmshcError, match="resample"):
        with kmshc.only_heads(model, ["L0H0"], ablation="resample"):
            pass


def test_circuit_save_and_load_round_trip(tmp_path):
    c = kmshc.Circuit(model="tiny-llama", task="grammar", heads=("L1H0", "L0H3"), n_heads_total=8,
                      scores={"val": {"accuracy": 0.5}}, extra={"method": "warm"})
    c.save(tmp_path / "c.json")
    back = kmshc.Circuit.load(tmp_path / "c.json")
    assert back == c and back.heads == ("L0H3", "L1H0")


def test_learn_gates_is_seeded_and_the_penalty_closes_gates(exp):
    a = kmshc.learn_gates(exp, steps=6, lam=0.0, seed=1)
    b = kmshc.learn_gates(exp, steps=6, lam=0.0, seed=1)
    sparse = kmshc.learn_gates(exp, steps=6, lam=5.0, seed=1)
    assert a.gates.shape == a.log_alpha.shape == exp.shape
    torch.testing.assert_close(a.log_alpha, b.log_alpha)
    assert sparse.log_alpha.sum() < a.log_alpha.sum()


def test_learn_gates_with_a_path_ranks_by_its_order(exp):
    plain = kmshc.learn_gates(exp, steps=6, seed=1)
    path = kmshc.learn_gates(exp, steps=12, seed=1, path_steps=8, path_growth=1.5)
    assert plain.order == () and plain.ranks() == plain.by_head(plain.log_alpha)
    assert sorted(path.order) == sorted(plain.by_head())
    ranks = path.ranks()
    assert sorted(ranks, key=ranks.get, reverse=True) == list(path.order)
    assert set(path.order[:len(path.heads)]) == set(path.heads)  # the heads still open rank first


def test_search_circuit_runs_the_library_search(exp):
    """Cold, it is :func:`kmshc.search.cold_search` on the val split; warm, it starts from the gates."""
    reachable = exp.scorer_for("val")(torch.ones(exp.shape)) - 1e-6  # a random model: S(M) on val
    cold = kmshc.search_circuit(exp, threshold=reachable, N=4)
    ref = cold_search(Recorder(point_scores(exp.scorer_for("val").outcomes, "accuracy")), exp.shape,
                      threshold=reachable, N=4, seed=exp.seed)
    assert cold.heads == ref.heads and cold.evaluations == ref.evaluations and cold.extra["method"] == "cold"
    warm = kmshc.search_circuit(exp, gates={f"L{l}H{h}": 0.9 for l in range(2) for h in range(4)}, threshold=reachable)
    assert warm.extra["method"] == "warm" and warm.scores["val"]["score"] >= reachable
    certified = kmshc.certify_circuit(exp, warm)
    assert certified.heads == warm.heads and certified.certificate["split"] == "test"
    assert certified.scores["test"]["accuracy"] == pytest.approx(exp.scorer_for("test")(warm.mask(*exp.shape)), abs=1e-4)


def test_search_circuit_searches_with_the_search_configs_defaults(exp, monkeypatch):
    """No setting given, the API searches as ``kmshc search`` does: SearchConfig's defaults
    (confident decisions on the recovery's lower bound) with the given settings replaced; a wrong
    name is a clear error. (A random tiny model has no full-vs-empty gap to search in recovery
    units, so the driver call is captured rather than run.)"""
    import kmshc.search.run as run_module
    from dataclasses import replace as dc_replace
    seen = []

    def capture(cfg, rec, shape, **kw):
        seen.append((cfg, rec, kw))
        raise StopIteration

    monkeypatch.setattr(run_module, "drive", capture)
    with pytest.raises(StopIteration):
        kmshc.search_circuit(exp, N=4)
    cfg, rec, kw = seen[-1]
    assert cfg == dc_replace(SearchConfig(), experiment=exp, N=4) and cfg.confident
    assert isinstance(rec._scorers[""], RecoveryScores) and kw["gates"] is None
    with pytest.raises(StopIteration):
        kmshc.search_circuit(exp, gates={"L0H0": 0.9}, decision="point")
    cfg, rec, kw = seen[-1]
    assert not cfg.confident and cfg.strategy == SearchConfig().strategy and kw["gates"] == {"L0H0": 0.9}
    with pytest.raises(KmshcError, match="nope"):
        kmshc.search_circuit(exp, nope=1)


@pytest.mark.parametrize("field,value,message", [
    ("epsilon", 1.5, "epsilon: expected a value in (0, 1], got 1.5"),
    ("threshold", -0.1, "threshold: expected an accuracy in [0, 1], got -0.1"),
    ("looks", 0, "looks: expected a positive integer, got 0"),
    ("spending_power", 0.0, "spending_power: expected a positive number, got 0.0"),
    ("decision_confidence", 1.0, "decision_confidence: expected a value in (0.5, 1), got 1.0"),
    ("bar_slack", 2.0, "bar_slack: 2.0 is outside [0, 1]"),
    ("epsilon", None, "epsilon: expected a number, got None"),
    ("K", "3", "K: expected a number, got '3'"),
])
def test_search_config_refuses_a_bad_value_when_built(field, value, message):
    """The Python API gets the command line's field-named errors without loading a model or data."""
    with pytest.raises(KmshcError) as e:
        SearchConfig(**{field: value})
    assert message in str(e.value)
    SearchConfig(**{field: getattr(SearchConfig(), field)})  # the default value is accepted


def test_rank_heads_gives_gates_the_warm_search_starts_from(exp):
    """The verb's scores and starting set, as LearnedGates: log_alpha = the method's scores, gates 1 on the start."""
    from kmshc.rank.attribution import head_attribution, starting_set
    from kmshc.rank.forward_selection import forward_selection
    train = exp.scorer_for("train")
    att = kmshc.rank_heads(exp, coverage=0.5)
    ref = head_attribution(train)
    torch.testing.assert_close(att.log_alpha, ref.scores.float())
    assert set(att.heads) == set(starting_set(ref.named(), 0.5))
    with pytest.raises(KmshcError, match="no gap"):  # this random model's full margin is below the ablated one
        kmshc.rank_heads(exp, method="forward_selection")
    gap = kmshc.Experiment(model="tiny-gpt2", task="grammar", n=100, ablation="mean")  # one with a gap on train
    fs = kmshc.rank_heads(gap, method="forward_selection", target=0.5, max_heads=3)
    sel = forward_selection(gap.scorer_for("train"), target=0.5, max_heads=3)
    assert set(fs.heads) == set(sel.start) and 1 <= len(fs.heads) <= 3
    torch.testing.assert_close(fs.log_alpha, sel.scores.float())
    reachable = gap.scorer_for("val")(torch.ones(gap.shape)) - 1e-6
    warm = kmshc.search_circuit(gap, gates=fs, threshold=reachable)
    assert warm.extra["method"] == "warm" and warm.scores["val"]["score"] >= reachable
    with pytest.raises(KmshcError, match="RankSettings"):
        kmshc.rank_heads(exp, nope=1)
    with pytest.raises(KmshcError, match="method"):
        kmshc.rank_heads(exp, method="eap")
