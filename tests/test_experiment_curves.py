"""Curves of rankings on an experiment (kmshc.compare.experiment_curves) and the pieces under them:
explicit curve sizes, known endpoints, the mean over seeds, the seeded random baseline, and an
experiment under a second ablation that shares the loaded model."""
from __future__ import annotations

import math

import pytest
import torch

from kmshc.compare.curves import mean_curve, random_ranking, sizes, topk_curve
from kmshc.compare.experiment_curves import endpoint_scores, ranking_curve
from kmshc.experiment import Experiment
from kmshc.types import KmshcError, head_name

L, H = 3, 4
HEADS = [head_name(l, h) for l in range(L) for h in range(H)]


def additive(weights: dict[str, float]):
    """``S(mask)``: the sum of the kept heads' weights, a score whose best ranking is known."""
    w = torch.tensor([weights[h] for h in HEADS]).view(L, H)
    return lambda masks: (masks * w).sum((1, 2))


def test_sizes_read_head_counts_and_fractions_and_always_hold_both_ends():
    assert sizes(270, [5, 0.05, 0.5, 1000]) == [0, 5, 14, 135, 270]
    assert sizes(8, [0.01, 2]) == [0, 2, 8]      # 1% of 8 heads rounds to 0
    assert sizes(10) == [0, 1, 2, 3, 4, 5, 8, 10]  # the default grid
    for bad in ([-1], [1.5], ["3"], [True]):
        with pytest.raises(KmshcError):
            sizes(10, bad)


def test_true_order_beats_a_random_order_and_known_endpoints_change_nothing():
    weights = {h: 0.6 ** i for i, h in enumerate(reversed(HEADS))}  # the last head matters most
    score = additive(weights)
    truth = sorted(HEADS, key=lambda h: -weights[h])
    ks = sizes(L * H, [1, 2, 3, 6])
    best = topk_curve(truth, score, ks, L, H, label="truth")
    full, empty = float(score(torch.ones(1, L, H))[0]), 0.0
    known = topk_curve(truth, score, ks, L, H, endpoints=(full, empty))
    assert known.scores == pytest.approx(best.scores) and known.cmd == pytest.approx(best.cmd)
    worst = topk_curve(list(reversed(truth)), score, ks, L, H)
    for seed in range(5):
        rnd = topk_curve(random_ranking(L, H, seed), score, ks, L, H)
        assert best.cmd < rnd.cmd < worst.cmd + 1e-12 and best.cpr > rnd.cpr
    assert best.faithfulness[0] == 0 and best.faithfulness[-1] == pytest.approx(1)
    with pytest.raises(KmshcError, match="include 0"):
        topk_curve(truth, score, [1, 2], L, H)


def test_endpoints_are_not_scored_again():
    calls = []

    def score(masks):
        calls.append(len(masks))
        return masks.sum((1, 2))
    topk_curve(HEADS, score, [0, 3, 6, L * H], L, H, endpoints=(12.0, 0.0))
    topk_curve(HEADS, score, [0, L * H], L, H, endpoints=(12.0, 0.0))  # nothing inside: no call at all
    assert calls == [2]


def test_random_ranking_is_a_seeded_permutation():
    a = random_ranking(L, H, 0)
    assert sorted(a) == sorted(HEADS) and a == random_ranking(L, H, 0) and a != random_ranking(L, H, 1)


def test_mean_curve_averages_points_and_areas():
    score = additive({h: 1.0 for h in HEADS})
    a = topk_curve(HEADS, score, [0, 6, 12], L, H, label="a")
    b = topk_curve(HEADS, lambda m: score(m) ** 2, [0, 6, 12], L, H, label="b")
    m = mean_curve([a, b], "mean")
    assert m.faithfulness[1] == pytest.approx((0.5 + 0.25) / 2) and m.cpr == pytest.approx((a.cpr + b.cpr) / 2)
    with pytest.raises(KmshcError):
        mean_curve([a, topk_curve(HEADS, score, [0, 3, 12], L, H)], "x")


@pytest.fixture(scope="module")
def exp():
    """greater_than: under the tiny tokenizer its counterfactuals keep their clean sentences' lengths."""
    return Experiment(model="tiny-llama", task="greater_than", n=40, split_fractions=(0.4, 0.3, 0.3), ablation="mean")


def test_ranking_curve_on_an_experiment_with_and_without_shared_endpoints(exp):
    ranking = random_ranking(*exp.shape, 0)
    whole = ranking_curve(exp, ranking, [2, 0.5], items=8)
    ends = endpoint_scores(exp, items=8)
    shared = ranking_curve(exp, ranking, [2, 0.5], items=8, endpoints=ends)
    assert whole.ks == shared.ks == (0, 2, 4, 8)
    assert whole.scores == pytest.approx(shared.scores, abs=1e-5) and math.isfinite(whole.cmd)
    assert (whole.scores[-1], whole.scores[0]) == pytest.approx(ends, abs=1e-5)
    assert ranking_curve(exp, ranking, [2], items=12).scores[-1] != pytest.approx(ends[0], abs=1e-9)  # other items


def test_with_ablation_shares_the_model_and_changes_the_scores(exp):
    exp.loaded  # noqa: B018  (loaded first: the copy shares what is already there)
    cf = exp.with_ablation("counterfactual")
    assert cf.loaded is exp.loaded and cf.splits is exp.splits and cf.ablation == "counterfactual"
    assert exp.ablation == "mean"
    assert endpoint_scores(cf, items=8)[1] != pytest.approx(endpoint_scores(exp, items=8)[1], abs=1e-6)
