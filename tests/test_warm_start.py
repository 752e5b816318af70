"""The warm search's two starts: the heads whose gate exceeds the threshold, or the shortest
sufficient prefix of the learned order. Oracle tests on a planted additive score."""
from __future__ import annotations

import pytest
import torch

from kmshc.search import Recorder, refine
from kmshc.types import KmshcError

SHAPE = (4, 4)  # 16 heads
PLANTED = [3, 9, 12, 14]  # the circuit: together exactly enough


def planted_score(masks: torch.Tensor) -> list[float]:
    """Each planted head weighs 0.25, every other head 0.001 (normalised so ``S(M) = 1``): ``S(PLANTED)``
    is 0.988 and any three planted heads with all the others 0.753, so ``U = 0.9`` needs the four."""
    w = torch.full((SHAPE[0] * SHAPE[1],), 0.001, dtype=torch.float64)
    w[PLANTED] = 0.25
    w = w / w.sum()
    return (masks.reshape(len(masks), -1).double() @ w).tolist()


def saturated_gates(order: list[int]) -> tuple[dict[int, float], dict[int, float]]:
    """Gates as trained gates read: the first 12 of ``order`` all exactly 1.0, the rest 0; and
    ``log_alpha`` falling along ``order`` (the ranking the gates cannot show)."""
    gates = {h: 1.0 if i < 12 else 0.0 for i, h in enumerate(order)}
    log_alpha = {h: 6.0 - 0.5 * i for i, h in enumerate(order)}
    return gates, log_alpha


def test_prefix_start_costs_the_floor_when_the_order_leads_with_the_circuit():
    rest = [h for h in range(16) if h not in PLANTED]
    gates, log_alpha = saturated_gates(PLANTED + rest)
    from_gates = refine(Recorder(planted_score), SHAPE, gates, importance=log_alpha, epsilon=0.9, strategy="ordered")
    prefix = refine(Recorder(planted_score), SHAPE, gates, importance=log_alpha, epsilon=0.9, strategy="ordered",
                    start="prefix")
    assert sorted(from_gates.heads) == sorted(prefix.heads) == ["L0H3", "L2H1", "L3H0", "L3H2"]
    # gates: S(M), S(∅), S(C0), one deletion per each of the 12 open heads (the last 4 repeat none)
    assert from_gates.evaluations == 2 + 1 + 12
    # prefix: S(M), S(∅); prefixes 1, 2, 4 (hit) and 3; deletions of the 4 heads, one of them the prefix of 3
    assert prefix.evaluations == 2 + 4 + 3
    assert prefix.evaluations <= 2 * (len(PLANTED) + 1)


def test_prefix_start_still_ends_sufficient_and_one_minimal_from_a_poor_order():
    poor = [0, 3, 1, 2, 9, 4, 5, 6, 12, 7, 8, 10, 11, 14, 13, 15]  # planted heads at ranks 2, 5, 9, 14
    gates, log_alpha = saturated_gates(poor)
    res = refine(Recorder(planted_score), SHAPE, gates, importance=log_alpha, epsilon=0.9, start="prefix")
    assert sorted(res.heads) == ["L0H3", "L2H1", "L3H0", "L3H2"]
    assert res.trace[1]["event"] == "restored_in_gate_order" and res.trace[1]["added"] == 14


def test_unknown_start_is_refused():
    with pytest.raises(KmshcError, match="start: expected 'gates' or 'prefix'"):
        refine(Recorder(planted_score), SHAPE, {0: 1.0}, start="top")
