"""``kmshc compare --diagnostics``: answer positions, the inside/outside summary, and the report on tiny-llama."""
from __future__ import annotations

import json

import pytest
import torch

from kmshc.cli import main
from kmshc.compare import load_entries
from kmshc.compare.head_scores import compare_diagnostics, summarise
from kmshc.engine.diagnostics import answer_positions, attention_patterns, head_diagnostics
from kmshc.engine.encoding import encode
from kmshc.experiment import Experiment
from kmshc.types import Circuit, KmshcError

IOI = {"model": "tiny-llama", "task": "ioi", "n": 40, "seed": 0, "ablation": "mean"}
GT = {"model": "tiny-llama", "task": "greater_than", "n": 40, "seed": 0, "ablation": "mean"}


def test_answer_positions_read_the_last_shared_token_and_find_the_latest_earlier_answer():
    t = lambda *x: torch.tensor(x)  # noqa: E731
    good = [t(0, 7, 8, 5, 8, 6, 7),     # "When A and B ..., B gave to A": reads 6, answer 7 first at 1
            t(0, 7, 8, 7, 6, 7, 9, 9),  # answer 7 occurs twice before the difference: the latest (3) counts
            t(0, 3, 4, 5)]              # answer 5 never occurs earlier: not valid
    bad = [t(0, 7, 8, 5, 8, 6, 8), t(0, 7, 8, 7, 6, 8, 9, 9), t(0, 3, 4, 6)]
    query, key, valid = answer_positions(good, bad)
    assert query.tolist() == [5, 4, 2] and key.tolist()[:2] == [1, 3] and valid.tolist() == [True, True, False]


def test_summarise_counts_inside_outside_top_k_and_tests_the_direction():
    scores = torch.tensor([[0.9, 0.1, 0.8, 0.0], [0.2, 0.7, 0.3, 0.05]])  # top 3: L0H0, L0H2, L1H1
    row = summarise(scores, [frozenset({"L0H0", "L0H2"}), frozenset({"L0H0", "L1H3"})], task="t", method="m",
                    diagnostic="d", top_k=3)
    assert row.inside == pytest.approx(((0.9 + 0.8) / 2 + (0.9 + 0.05) / 2) / 2)
    assert row.outside == pytest.approx(((0.1 + 0.0 + 0.2 + 0.7 + 0.3 + 0.05) / 6 + (0.1 + 0.8 + 0.0 + 0.2 + 0.7 + 0.3) / 6) / 2)
    assert row.top_k_in_circuit == pytest.approx(1.5) and row.top_k_random == pytest.approx(3 * 2 / 8)
    low = summarise(scores, [frozenset({"L0H3", "L1H3"})], task="t", method="m", diagnostic="d", top_k=3)
    assert low.top_k_in_circuit == 0 and low.p_value > 0.5 > row.p_value
    with pytest.raises(KmshcError, match="t/m circuit"):
        summarise(scores, [frozenset({"L5H0"})], task="t", method="m", diagnostic="d")


@pytest.fixture()
def runs(tmp_path):
    for name, exp, heads in (("ioi_s0", IOI, ("L0H1", "L1H2")), ("ioi_s1", {**IOI, "seed": 1}, ("L1H2",)),
                             ("gt_s0", GT, ("L0H0", "L0H3", "L1H1"))):
        (tmp_path / name).mkdir()
        Circuit(model="tiny-llama", task=exp["task"], heads=heads, n_heads_total=8, seed=exp["seed"],
                config={"experiment": exp}, extra={"method": "searched"}).save(tmp_path / name / "circuit_searched.json")
    return tmp_path


def _direct_answer_scores(exp: Experiment, n_items: int) -> torch.Tensor:
    """The IOI answer score computed pair by pair, unpadded, without :func:`kmshc.engine.diagnostics.attention_at`."""
    model, tok = exp.loaded
    enc = encode(exp.splits["test"], tok)
    total, count = torch.zeros(2, 4), 0
    for i in range(min(n_items, enc.n)):
        g, b = enc.seqs[2 * i], enc.seqs[2 * i + 1]
        d = int((g[:len(b)] != b[:len(g)]).nonzero()[0])
        earlier = [p for p in range(d) if g[p] == g[d]]
        if earlier:
            total += attention_patterns(model, g[None])[:, 0, :, d - 1, earlier[-1]]
            count += 1
    assert count > 0  # the IOI name occurs earlier in every prompt
    return total / count


def test_compare_diagnostics_on_tiny_llama_match_direct_scores_and_reach_the_report(runs, tmp_path):
    out = tmp_path / "cmp"
    assert main(["compare", str(runs), "--diagnostics", "--diagnostics_top_k", "3", "--out", str(out)]) == 0
    result = json.loads((out / "compare.json").read_text())["diagnostics"]
    rows = {(r["task"], r["diagnostic"]): r for r in result["rows"]}
    assert ("greater_than", "answer") not in rows and ("ioi", "answer") in rows  # no earlier answer in greater-than
    exp = Experiment(**IOI)
    direct = _direct_answer_scores(exp, n_items=128)
    torch.testing.assert_close(torch.tensor(result["scores"]["answer:ioi"]), direct, atol=1e-3, rtol=0)
    ind = head_diagnostics(*exp.loaded).induction
    circuits = [frozenset({"L0H1", "L1H2"}), frozenset({"L1H2"})]
    want = summarise(ind, circuits, task="ioi", method="searched", diagnostic="induction", top_k=3)
    got = rows[("ioi", "induction")]
    assert got["n_circuits"] == 2 and got["inside"] == pytest.approx(want.inside, abs=1e-6)
    assert got["top_k_in_circuit"] == want.top_k_in_circuit
    report = (out / "report.md").read_text()
    assert "## Head diagnostics" in report and "| ioi | searched | answer |" in report


def test_compare_diagnostics_refuses_circuits_of_two_models(runs):
    other = runs / "gpt2_s0"
    other.mkdir()
    Circuit(model="tiny-gpt2", task="ioi", heads=("L0H0",), n_heads_total=8, seed=0,
            config={"experiment": {**IOI, "model": "tiny-gpt2"}}).save(other / "circuit_searched.json")
    with pytest.raises(KmshcError, match="one model"):
        compare_diagnostics(load_entries([runs]))


def test_a_circuit_of_every_head_has_no_outside_and_no_test():
    row = summarise(torch.arange(8.0).view(2, 4), [frozenset(f"L{l}H{h}" for l in range(2) for h in range(4))],
                    task="t", method="m", diagnostic="d", top_k=3)
    assert row.outside is None and row.p_value is None and row.inside == pytest.approx(3.5)
    assert row.top_k_in_circuit == 3 == row.top_k_random
