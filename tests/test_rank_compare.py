"""Comparing two head rankings: top-k Jaccard and Spearman's rho, against hand-computed values."""
from __future__ import annotations

import json

import pytest

from kmshc.compare.rankings import compare_rankings, read_ranking, top_k
from kmshc.types import KmshcError

A = {"L0H0": 5.0, "L0H1": 4.0, "L1H0": 3.0, "L1H1": 2.0, "L2H0": 1.0}


def test_top_k_breaks_ties_by_name():
    assert top_k({"L1H0": 1.0, "L0H3": 1.0, "L0H0": 2.0}, 2) == ["L0H0", "L0H3"]


def test_identical_and_reversed_rankings():
    same = compare_rankings(A, {h: 10 * v for h, v in A.items()}, ks=(2, 5))
    assert same.spearman == pytest.approx(1.0) and same.jaccard == {2: 1.0, 5: 1.0}
    rev = compare_rankings(A, {h: -v for h, v in A.items()}, ks=(2,))
    assert rev.spearman == pytest.approx(-1.0) and rev.jaccard == {2: 0.0}


def test_a_partial_overlap_by_hand():
    b = {"L0H0": 5.0, "L0H1": 1.0, "L1H0": 4.0, "L1H1": 2.0, "L2H0": 3.0}
    c = compare_rankings(A, b, ks=(2, 3, 9))
    assert c.jaccard[2] == pytest.approx(1 / 3)  # {L0H0, L0H1} vs {L0H0, L1H0}
    assert c.jaccard[3] == pytest.approx(2 / 4)  # {L0H0, L0H1, L1H0} vs {L0H0, L1H0, L2H0}
    assert c.jaccard[5] == 1.0 and 9 not in c.jaccard  # k is capped at the 5 shared heads
    d2 = (0 ** 2 + 3 ** 2 + 1 ** 2 + 0 ** 2 + 2 ** 2)  # rank differences 1-1, 2-5, 3-2, 4-4, 5-3
    assert c.spearman == pytest.approx(1 - 6 * d2 / (5 * (25 - 1)))
    assert c.to_dict()["jaccard_top_k"]["2"] == c.jaccard[2]


def test_undefined_correlation_and_disjoint_rankings():
    assert compare_rankings(A, {h: 1.0 for h in A}).spearman is None
    with pytest.raises(KmshcError, match="share no head"):
        compare_rankings(A, {"L9H9": 1.0})


def test_read_ranking_from_a_gates_file(tmp_path):
    from kmshc.experiment import Experiment
    heads = {h: {"gate": 1.0, "log_alpha": v} for h, v in A.items()}
    (tmp_path / "gates.json").write_text(json.dumps({"experiment": Experiment(model="tiny-gpt2").to_dict(),
                                                      "heads": heads}))
    assert read_ranking(tmp_path) == A == read_ranking(tmp_path / "gates.json")
    heads["L0H0"] = {"gate": 1.0}
    (tmp_path / "gates.json").write_text(json.dumps({"experiment": Experiment().to_dict(), "heads": heads}))
    with pytest.raises(KmshcError, match="log_alpha"):
        read_ranking(tmp_path)
