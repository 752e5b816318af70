"""Redundant circuits on planted per-example outcomes: the chain, its stop, knock-outs and mixes."""
from __future__ import annotations

import pytest
import torch

from kmshc.redundancy.disjoint import Found, analyze, find_circuits, grid
from kmshc.redundancy.report import report_text, write_report
from kmshc.redundancy.run import Redundancy
from kmshc.engine.readout import Outcome
from kmshc.search import CertificateConfig, Recorder, certify, cold_search, refine
from kmshc.search.common import NoSufficientSet, indices, names
from kmshc.search.decide import point_scores
from kmshc.types import KmshcError

SHAPE = (4, 4)  # 16 heads
A, B = {1, 6, 11}, {3, 8, 14}


def planted(rule, n: int = 300):
    """Examples ``i < n·0.8`` are right when ``rule(active heads)`` holds, else a coin flip (``i % 2``);
    the rest are always right. So ``S(∅) = 0.6``, and ``S(M) = 1`` when the rule holds for ``M``."""
    def outcomes(masks: torch.Tensor) -> Outcome:
        rows = []
        for m in masks:
            on = set(torch.nonzero(m.reshape(-1) > 0.5).flatten().tolist())
            ok = rule(on)
            rows.append([1.0 if (i >= 0.8 * n or ok) else float(i % 2) for i in range(n)])
        correct = torch.tensor(rows)
        return Outcome(correct, 2 * correct - 1)
    return outcomes


def either(on: set[int]) -> bool:
    """Two disjoint circuits, each sufficient alone: all of A, or all of B."""
    return A <= on or B <= on


def finder(outcomes, evaluations: list | None = None):
    """``find`` of :func:`find_circuits` on planted outcomes: cold keep search outside the circuits found."""
    everything = set(range(SHAPE[0] * SHAPE[1]))

    def find(found, budget):
        universe = everything - {i for f in found for i in indices(f.heads, SHAPE)}
        rec = Recorder(point_scores(outcomes, "accuracy"), max_evaluations=budget)
        res = cold_search(rec, SHAPE, epsilon=0.9, N=4, seed=0, universe=universe)
        cert = certify(outcomes, SHAPE, res.heads, epsilon=0.9, pool=names(universe, SHAPE))
        if evaluations is not None:
            evaluations.append(rec.evaluations)
        return Found(res.heads, cert, res.evaluations, capped=res.capped)
    return find


def test_two_disjoint_circuits_are_both_found_then_the_chain_stops():
    outcomes = planted(either)
    found, stop, why = find_circuits(finder(outcomes), max_circuits=5)
    assert sorted(set(indices(f.heads, SHAPE)) for f in found) == sorted([A, B], key=sorted)
    assert stop == "no_sufficient_set" and "below U" in why
    assert all(f.certificate.verified for f in found)
    assert found[0].certificate.knockout.verdict == "backup"  # C1 knocked out: C2 takes over
    C2 = set(indices(found[1].heads, SHAPE))
    for c in found[1].certificate.controls:  # controls of the backup are drawn outside C1
        if c.kind in ("random", "plus_random"):
            assert not set(indices(c.heads, SHAPE)) & (A | B) - C2


def test_analysis_knockout_curve_unions_and_substitutive_mix():
    outcomes = planted(either)
    found = [Found(names(A, SHAPE)), Found(names(B, SHAPE))]
    a = analyze(outcomes, SHAPE, found, epsilon=0.9, mix_points=4)
    assert [p.verdict for p in a.knockouts] == ["backup", "backup", "collapse"]
    assert (a.circuits_to_lose, a.circuits_to_fail) == (2, 2)
    assert a.overlaps == [[3, 0], [0, 3]]
    assert [p.estimate.recovery for p in a.alone] == [1.0, 1.0] and a.unions[-1].estimate.recovery == 1.0
    d = a.dynamics
    assert d.kind == "substitutive" and d.diff == 0.0
    assert d.forward.sizes == [0, 1, 2, 3] and d.forward.with_base[0].recovery == 1.0
    assert [e.recovery for e in d.forward.alone] == [0.0, 0.0, 0.0, 1.0]  # B works only when complete


@pytest.mark.parametrize("rule, kind", [
    (lambda on: bool(on & A) or bool(on & B), "substitutive"),
    (lambda on: (A <= on) != (B <= on), "interfering"),   # either one alone, never both
])
def test_mix_kinds(rule, kind):
    a = analyze(planted(rule), SHAPE, [Found(names(A, SHAPE)), Found(names(B, SHAPE))], epsilon=0.9)
    assert a.dynamics.kind == kind


def test_additive_when_each_circuit_carries_part_of_the_task():
    """Half the task examples need A, half need B: each alone recovers about half, the union all."""
    n = 300

    def outcomes(masks):
        rows = []
        for m in masks:
            on = set(torch.nonzero(m.reshape(-1) > 0.5).flatten().tolist())
            rows.append([1.0 if ((A if i % 4 < 2 else B) <= on) else float(i % 2 == 0 and i % 4 == 2)
                         for i in range(n)])
        c = torch.tensor(rows)
        return Outcome(c, 2 * c - 1)
    a = analyze(outcomes, SHAPE, [Found(names(A, SHAPE)), Found(names(B, SHAPE))], epsilon=0.9)
    assert a.dynamics.kind == "additive" and a.dynamics.diff > 0.2


def test_single_circuit_has_no_backup():
    outcomes = planted(lambda on: A <= on)
    found, stop, _ = find_circuits(finder(outcomes), max_circuits=5)
    assert [set(indices(f.heads, SHAPE)) for f in found] == [A] and stop == "no_sufficient_set"
    assert found[0].certificate.knockout.verdict == "collapse"
    a = analyze(outcomes, SHAPE, found, epsilon=0.9)
    assert a.circuits_to_fail == 1 and a.dynamics is None
    res = Redundancy("x", found, stop, "why", a)
    assert "collapses after 1 circuit(s)" in report_text(res)


def test_budgets_stop_the_chain():
    outcomes = planted(either)
    found, stop, _ = find_circuits(finder(outcomes), max_circuits=1)
    assert len(found) == 1 and stop == "max_circuits"
    spent: list[int] = []
    found, stop, why = find_circuits(finder(outcomes, spent), max_circuits=5, max_evaluations=spent_first(outcomes) + 3)
    assert len(found) == 1 and stop == "max_evaluations" and "C2" in why


def spent_first(outcomes) -> int:
    return find_circuits(finder(outcomes), max_circuits=1)[0][0].evaluations


def test_warm_refine_outside_an_excluded_circuit_starts_from_the_learned_set_minus_it():
    outcomes = planted(either)
    gates = {h: (0.95 if h in A else 0.7 if h in B else 0.01) for h in range(16)}
    rec = Recorder(point_scores(outcomes, "accuracy"))
    res = refine(rec, SHAPE, gates, epsilon=0.9, seed=0, strategy="bundles", universe=set(range(16)) - A)
    assert set(indices(res.heads, SHAPE)) == B
    assert res.trace[0]["start"] == 3  # the learned set {A, B} (gates > gate_threshold = 0.5) minus A
    for strategy in ("bundles", "ordered"):
        rec = Recorder(point_scores(outcomes, "accuracy"))
        with pytest.raises(NoSufficientSet):
            refine(rec, SHAPE, gates, epsilon=0.9, strategy=strategy, universe=set(range(16)) - A - B)
        # M, B (= the learned set minus the exclusions, here empty) and everything allowed: no
        # prefix-by-prefix restore through the 16 - |A| - |B| other heads
        assert rec.evaluations == 3


def test_paper_semantics_refuses_exclusions():
    with pytest.raises(KmshcError, match="paper semantics"):
        cold_search(Recorder(point_scores(planted(either), "accuracy")), SHAPE, semantics="paper", universe={1, 2})


def test_report_and_plots_are_written(tmp_path):
    outcomes = planted(either)
    found, stop, why = find_circuits(finder(outcomes), max_circuits=5)
    res = Redundancy(str(tmp_path), found, stop, why, analyze(outcomes, SHAPE, found, epsilon=0.9),
                     learned=[found[0].heads[0]])
    paths = write_report(res, tmp_path)
    assert [p.name for p in paths] == ["report.md", "knockout.png", "mix.png"]
    assert all(p.stat().st_size > 1000 for p in paths[1:])
    text = paths[0].read_text()
    assert "## C2: 3 heads" in text and "substitutive" in text and "Overlap with the learned set (1 heads): 1" in text
    assert res.to_dict()["circuits"][0]["learned_overlap"] == 1


def test_grid():
    assert grid(3, 6) == [0, 1, 2, 3] and grid(10, 3) == [0, 5, 10] and grid(0, 4) == [0]
