"""Faithfulness curves: top-k masks, normalisation, and the CPR/CMD areas against hand-computed values."""
from __future__ import annotations

import pytest
import torch

from kmshc.compare.curves import (Curve, cmd, complete_ranking, cpr, curve_from_scores, faithfulness_curve, grid,
                          normalise, ranking_from_gates, topk_masks)
from kmshc.types import KmshcError


def test_areas_match_hand_computed_trapezoids():
    x = [0.0, 0.25, 0.5, 1.0]
    f = [0.0, 0.5, 1.0, 1.0]
    # CPR: 0.25*(0+0.5)/2 + 0.25*(0.5+1)/2 + 0.5*(1+1)/2 = 0.0625 + 0.1875 + 0.5
    assert cpr(x, f) == pytest.approx(0.75)
    # CMD: |1-f| = [1, .5, 0, 0]: 0.25*1.5/2 + 0.25*0.5/2 + 0 = 0.1875 + 0.0625
    assert cmd(x, f) == pytest.approx(0.25)
    # Overshoot counts in CMD (|1 - f|) but adds to CPR.
    assert cpr([0, 1], [0, 1.5]) == pytest.approx(0.75)
    assert cmd([0, 0.5, 1], [0, 1.5, 1]) == pytest.approx(0.5 * (1 + 0.5) / 2 + 0.5 * (0.5 + 0) / 2)


def test_a_perfect_step_curve_has_cpr_one_and_cmd_zero_limit():
    x = [0.0, 1e-9, 1.0]
    assert cpr(x, [0, 1, 1]) == pytest.approx(1.0, abs=1e-8)
    assert cmd(x, [0, 1, 1]) == pytest.approx(0.0, abs=1e-8)
    # The diagonal (a ranking no better than adding heads uniformly) has both areas 1/2.
    assert cpr([0, 0.5, 1], [0, 0.5, 1]) == pytest.approx(0.5) and cmd([0, 0.5, 1], [0, 0.5, 1]) == pytest.approx(0.5)


def test_normalise_and_its_degenerate_case():
    assert normalise([0.5, 0.7, 0.9], full=0.9, empty=0.5) == pytest.approx([0.0, 0.5, 1.0])
    with pytest.raises(KmshcError, match="no gap"):
        normalise([0.5], full=0.5, empty=0.5)


def test_grid_and_topk_masks():
    assert grid(10, (0.0, 0.14, 0.5)) == [0, 1, 5, 10]
    masks = topk_masks(["L1H0", "L0H1", "L0H0"], [0, 1, 3], 2, 2)
    assert masks.shape == (3, 2, 2) and masks[0].sum() == 0
    assert masks[1].tolist() == [[0, 0], [1, 0]] and masks[2].tolist() == [[1, 1], [1, 0]]
    with pytest.raises(KmshcError, match="names 3 heads"):
        topk_masks(["L1H0", "L0H1", "L0H0"], [4], 2, 2)


def test_rankings_from_gates_and_from_a_circuit():
    la = {"L0H0": -1.0, "L0H1": 3.0, "L1H0": 0.5, "L1H1": 3.0}
    assert ranking_from_gates(la, 2, 2) == ["L0H1", "L1H1", "L1H0", "L0H0"]  # ties keep layer order
    assert complete_ranking(["L1H1", "L0H0", "L1H1"], 2, 2) == ["L1H1", "L0H0", "L0H1", "L1H0"]
    assert complete_ranking(["L1H1"], 2, 2, rest_order=la) == ["L1H1", "L0H1", "L1H0", "L0H0"]
    with pytest.raises(KmshcError, match="L2H0 has layer 2"):
        complete_ranking(["L2H0"], 2, 2)


def test_faithfulness_curve_scores_all_masks_in_one_call():
    """An additive toy score: each head contributes a known weight, so every point is known."""
    weights = torch.tensor([[4.0, 0.0], [1.0, 3.0]])  # L0H0=4, L0H1=0, L1H0=1, L1H1=3; total 8
    calls = []

    def score(masks: torch.Tensor) -> torch.Tensor:
        calls.append(masks.shape[0])
        return 1.0 + (masks * weights).sum((1, 2))  # S(∅) = 1, S(M) = 9

    c = faithfulness_curve(["L0H0", "L1H1", "L1H0", "L0H1"], score, 2, 2, label="good",
                           fractions=(0.0, 0.25, 0.5, 0.75, 1.0))
    assert calls == [5]
    assert c.ks == (0, 1, 2, 3, 4) and c.faithfulness == pytest.approx((0, 0.5, 0.875, 1.0, 1.0))
    x = [0, 0.25, 0.5, 0.75, 1.0]
    assert c.cpr == pytest.approx(cpr(x, c.faithfulness))
    # By hand: 0.25 * ((0+.5) + (.5+.875) + (.875+1) + (1+1)) / 2
    assert c.cpr == pytest.approx(0.25 * (0.5 + 1.375 + 1.875 + 2.0) / 2)
    worse = faithfulness_curve(["L0H1", "L1H0", "L1H1", "L0H0"], score, 2, 2, fractions=(0.0, 0.25, 0.5, 0.75, 1.0))
    assert worse.cpr < c.cpr and worse.cmd > c.cmd
    assert isinstance(curve_from_scores("x", 4, [0, 4], [1.0, 9.0], 9.0, 1.0), Curve)
