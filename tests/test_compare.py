"""Comparison maths and definitions, on hand-made circuit files with known overlaps.

The fixture: a 4-layer x 3-head model, tasks A and B, three seeds each. Learned circuits:

    A: s0 {L0H0, L0H1, L1H0}   s1 {L0H0, L0H1}          s2 {L0H0, L2H2}
    B: s0 {L0H0, L3H0}         s1 {L0H0, L3H0, L3H1}    s2 {L3H0}

so f_A = {L0H0: 1, L0H1: 2/3, L1H0: 1/3, L2H2: 1/3} and f_B = {L0H0: 2/3, L3H0: 1, L3H1: 1/3}.
L0H0 is in every A circuit but strong in B too, so it is not super; L3H0 is super in B.
Searched circuits are the learned ones minus their last head (or equal, if of size 1).
"""
from __future__ import annotations

import json
from fractions import Fraction

import pytest

from kmshc.compare import (classify_heads, head_frequency, infer_shape, jaccard, layer_counts,
                           load_entries, mean_pairwise_jaccard, overlap_matrix, precision_recall)
from kmshc.compare.tables import cross_analysis, pair_rows, recorded_scores
from kmshc.types import Circuit, KmshcError

LEARNED = {
    "A": [["L0H0", "L0H1", "L1H0"], ["L0H0", "L0H1"], ["L0H0", "L2H2"]],
    "B": [["L0H0", "L3H0"], ["L0H0", "L3H0", "L3H1"], ["L3H0"]],
}
EXPERIMENT = {"model": "tiny-gpt2", "task": "grammar", "seed": 0}


def _write_run(root, task, seed, learned):
    run = root / f"{task}_s{seed}"
    run.mkdir(parents=True)
    gates = {f"L{l}H{h}": (0.9 if f"L{l}H{h}" in learned else 0.1) for l in range(4) for h in range(3)}
    (run / "gates.json").write_text(json.dumps(
        {"model": "m", "task": task, "n_layers": 4, "n_heads": 3, "tau": 0.5,
         "heads": {k: {"log_alpha": 0.0, "gate": v} for k, v in gates.items()}}))
    exp = {**EXPERIMENT, "seed": seed, "data": task}
    Circuit(model="m", task=task, heads=tuple(learned), n_heads_total=12, seed=seed,
            config={"experiment": exp}, evaluations=0,
            extra={"method": "learned", "wall_time_s": 10.0}).save(run / "circuit_learned.json")
    searched = learned[:-1] if len(learned) > 1 else learned
    cert = {"split": "test", "n": 50, "full": {"accuracy": 0.9, "ci": [0.8, 0.95]},
            "baseline": {"accuracy": 0.5}, "threshold": {"value": 0.86},
            "circuit": {"accuracy": 0.88 + seed / 100, "ci": [0.8, 0.94], "margin_recovery": 0.7},
            "verified": True}
    Circuit(model="m", task=task, heads=tuple(searched), n_heads_total=12, seed=seed, certificate=cert,
            config={"experiment": exp}, evaluations=40 + seed,
            extra={"method": "warm", "wall_time_s": 5.0}).save(run / "circuit_searched.json")
    return run


@pytest.fixture
def runs(tmp_path):
    root = tmp_path / "runs"
    for task, sets in LEARNED.items():
        for seed, heads in enumerate(sets):
            _write_run(root, task, seed, heads)
    return root


def test_set_maths_including_empty_sets():
    assert jaccard({"L0H0", "L0H1"}, {"L0H1", "L1H0"}) == pytest.approx(1 / 3)
    assert jaccard([], []) == 1.0 and jaccard(["L0H0"], []) == 0.0
    assert precision_recall({"L0H0"}, {"L0H0", "L1H1"}) == (1.0, 0.5)
    assert precision_recall([], {"L0H0"}) == (1.0, 0.0)
    assert mean_pairwise_jaccard([{"L0H0"}]) is None
    assert layer_counts(["L0H0", "L0H2", "L3H1"], 4) == [2, 0, 0, 1]
    with pytest.raises(KmshcError, match="layer 5"):
        layer_counts(["L5H0"], 4)


def test_frequency_and_head_classes_match_the_definitions():
    freq = {t: head_frequency(s) for t, s in LEARNED.items()}
    assert freq["A"] == pytest.approx({"L0H0": 1.0, "L0H1": 2 / 3, "L1H0": 1 / 3, "L2H2": 1 / 3})
    c = classify_heads(freq, strong=0.5, super_=0.9)
    assert c["A"] == {"any": ["L0H0", "L0H1", "L1H0", "L2H2"], "weak": ["L1H0", "L2H2"],
                      "strong": ["L0H0", "L0H1"], "super": []}  # L0H0 is strong in B as well
    assert c["B"] == {"any": ["L0H0", "L3H0", "L3H1"], "weak": ["L3H1"], "strong": ["L0H0", "L3H0"],
                      "super": ["L3H0"]}
    # raising the strong bar to 0.7 makes L0H0 weak in B, so it becomes super in A
    c7 = classify_heads(freq, strong=0.7, super_=0.9)
    assert c7["A"]["super"] == ["L0H0"] and c7["B"]["weak"] == ["L0H0", "L3H1"]
    with pytest.raises(KmshcError, match="strong"):
        classify_heads(freq, strong=0.95, super_=0.9)


def test_loading_runs_methods_gates_and_shape(runs):
    entries = load_entries([runs])
    assert len(entries) == 12
    assert {e.method for e in entries} == {"learned", "warm"}
    e = next(e for e in entries if e.label == "A_s0:learned")
    assert e.heads == {"L0H0", "L0H1", "L1H0"} and e.gates["L0H0"] == 0.9 and e.gates["L3H2"] == 0.1
    assert infer_shape(entries) == (4, 3)
    single = load_entries([runs / "B_s2" / "circuit_searched.json"])
    assert single[0].label == "B_s2:warm" and single[0].method == "warm"


def test_infer_shape_without_gates_uses_the_head_count():
    c = Circuit(model="m", task="t", heads=("L3H2",), n_heads_total=12)
    from kmshc.compare import Entry
    from pathlib import Path
    assert infer_shape([Entry("x", Path("x.json"), c, "cold")]) == (4, 3)
    c2 = Circuit(model="m", task="t", heads=("L3H2",), n_heads_total=7)
    with pytest.raises(KmshcError, match="--shape"):
        infer_shape([Entry("x", Path("x.json"), c2, "cold")])


def test_cross_analysis_numbers(runs):
    a = cross_analysis(load_entries([runs]), n_layers=4)
    learned = a["methods"]["learned"]
    # seed stability of A: J(s0,s1)=2/3, J(s0,s2)=1/4, J(s1,s2)=1/3 -> mean 5/12
    assert learned["tasks"]["A"]["seed_stability"] == pytest.approx(float(Fraction(5, 12)))
    assert learned["tasks"]["A"]["layer_distribution"] == pytest.approx([5 / 3, 1 / 3, 1 / 3, 0])
    assert learned["tasks"]["B"]["mean_size"] == pytest.approx(2.0)
    ov = learned["overlap"]
    assert ov["any"]["labels"] == ["A", "B"]
    assert ov["any"]["jaccard"][0][1] == pytest.approx(1 / 6) and ov["any"]["intersection"][0][1] == 1
    assert ov["strong"]["jaccard"][0][1] == pytest.approx(1 / 3)
    assert ov["weak"]["intersection"][0][1] == 0 and ov["super"]["intersection"][0][1] == 0
    # searched A circuits: s0 {L0H0,L0H1}, s1 {L0H0}, s2 {L0H0} -> frequency of L0H1 is 1/3
    assert a["methods"]["warm"]["tasks"]["A"]["frequency"]["L0H1"] == pytest.approx(1 / 3)
    assert a["methods"]["warm"]["tasks"]["A"]["full_accuracy"] == pytest.approx(0.9)
    # learned vs warm in the same run: searched ⊆ learned, so precision(learned vs warm) < 1, recall 1
    lvs = a["learned_vs_searched"]["A"]["learned vs warm"]
    assert lvs["n_runs"] == 3 and lvs["recall_a_vs_b"] == 1.0
    assert lvs["jaccard"] == pytest.approx((2 / 3 + 1 / 2 + 1 / 2) / 3)


def test_pair_rows_scores_and_comparability(runs):
    entries = load_entries([runs / "A_s0", runs / "A_s1"])
    rows = pair_rows(entries)
    assert len(rows) == 6
    same = next(r for r in rows if r["a"] == "A_s0:learned" and r["b"] == "A_s0:warm")
    assert same["same_run"] and same["comparable"]
    assert (same["size_a"], same["size_b"], same["intersection"]) == (3, 2, 2)
    assert same["precision_a_vs_b"] == pytest.approx(2 / 3) and same["recall_a_vs_b"] == 1.0
    assert same["test_accuracy_b"] == pytest.approx(0.88) and same["evaluations_b"] == 40
    other = next(r for r in rows if r["a"] == "A_s0:warm" and r["b"] == "A_s1:warm")
    assert not other["comparable"] and not other["same_run"]  # different seeds -> different S(.)
    s = recorded_scores(entries[1])
    assert s["threshold"] == 0.86 and s["verified"] is True and s["ci"] == [0.8, 0.94]


def test_overlap_matrix_is_symmetric_with_unit_diagonal():
    m = overlap_matrix({"x": ["L0H0"], "y": ["L0H0", "L1H1"], "z": []})
    assert m["jaccard"][0][1] == m["jaccard"][1][0] == 0.5
    assert [m["jaccard"][i][i] for i in range(3)] == [1.0, 1.0, 1.0]
    assert m["intersection"][1][1] == 2 and m["intersection"][2][0] == 0


def test_load_errors_name_the_path(tmp_path, runs):
    with pytest.raises(KmshcError, match="no such run"):
        load_entries([tmp_path / "missing"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(KmshcError, match="no circuit_"):
        load_entries([tmp_path / "empty"])
    (runs / "A_s0" / "gates.json").write_text(json.dumps({"heads": {"L0H0": 0.3}}))
    with pytest.raises(KmshcError, match="gates.json"):
        load_entries([runs / "A_s0"])


def test_recorded_scores_read_the_statistical_certificate(tmp_path):
    """The certificate of search.py today: a threshold in the metric's units, recovery with its lower bound."""
    cert = {"split": "test", "n": 400, "metric": "margin", "threshold": -1.25, "epsilon_range": [0.0, 0.93],
            "full": {"value": -1.0, "accuracy": 0.97}, "baseline": {"value": -3.5, "accuracy": 0.52},
            "circuit": {"value": -1.2, "accuracy": 0.95, "recovery": 0.92, "lower": 0.9, "upper": 0.94},
            "verified": True}
    Circuit(model="m", task="ioi", heads=("L0H0",), n_heads_total=12, certificate=cert).save(tmp_path / "c.json")
    s = recorded_scores(load_entries([tmp_path / "c.json"])[0])
    assert (s["threshold"], s["metric"], s["recovery"], s["recovery_lower"]) == (-1.25, "margin", 0.92, 0.9)
    assert s["epsilon_range"] == [0.0, 0.93] and s["full_accuracy"] == 0.97 and s["accuracy"] == 0.95
