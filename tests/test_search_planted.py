"""Searches on planted evaluators whose minimal sufficient sets are known by construction."""
from __future__ import annotations

import random

import pytest
import torch

from kmshc.search import Recorder, batched, cold_search, draw_bundles, macro_layer_search, refine, threshold_value
from kmshc.search.common import names
from kmshc.search.refine import restore_in_gate_order
from kmshc.types import KmshcError

SHAPE = (6, 8)  # 48 heads


def planted(required: set[int], groups: list[set[int]], calls: list | None = None):
    """``S(A) = 0.5 + 0.5·(satisfied clauses / clauses)``: a clause is a required head, or an
    OR-group (any one of its heads suffices). Monotone; ``S(M) = 1``, ``S(∅) = 0.5``."""
    clauses = [{r} for r in required] + [set(g) for g in groups]

    def evaluate_many(masks: torch.Tensor) -> list[float]:
        if calls is not None:
            calls.append(masks.shape[0])
        out = []
        for m in masks:
            on = set(torch.nonzero(m.reshape(-1) > 0.5).flatten().tolist())
            out.append(0.5 + 0.5 * sum(bool(on & c) for c in clauses) / len(clauses))
        return out
    return evaluate_many


def is_planted_minimal(found: set[int], required: set[int], groups: list[set[int]]) -> bool:
    """Exactly the required heads plus one head of each (disjoint) OR-group."""
    rest = found - required
    return required <= found and all(len(rest & g) == 1 for g in groups) and rest <= set().union(*groups)


def idx(result) -> set[int]:
    return {int(n[1:].split("H")[0]) * SHAPE[1] + int(n.split("H")[1]) for n in result.heads}


@pytest.mark.parametrize("seed", range(5))
def test_cold_keep_finds_the_planted_minimal_set(seed):
    rng = random.Random(seed)
    heads = rng.sample(range(48), 9)
    required, groups = set(heads[:3]), [set(heads[3:6]), set(heads[6:9])]
    calls: list[int] = []
    rec = Recorder(planted(required, groups, calls))
    res = cold_search(rec, SHAPE, semantics="keep", epsilon=0.9, N=10, seed=seed)
    assert is_planted_minimal(idx(res), required, groups), res.heads
    assert res.evaluations == sum(calls) == rec.evaluations  # one mask = one evaluation
    assert res.score is not None and res.score >= res.threshold


def test_cold_keep_returns_the_unique_minimum_without_redundancy():
    required = {1, 9, 17, 40}
    res = cold_search(Recorder(planted(required, [])), SHAPE, semantics="keep", seed=3)
    assert set(idx(res)) == required


@pytest.mark.parametrize("seed", range(5))
def test_paper_semantics_finds_the_redundant_group(seed):
    """Paper semantics: C qualifies when any single restored head of C recovers U, i.e. C is an
    OR-group of redundant heads. Bundles that fail are removed; group heads never fail."""
    rng = random.Random(seed)
    group = set(rng.sample(range(12), 3))
    rec = Recorder(planted(set(), [group]))
    res = cold_search(rec, (3, 4), semantics="paper", epsilon=0.9, N=10, K=1, seed=seed, macro=False)
    assert {int(n[1]) * 4 + int(n[3]) for n in res.heads} == group
    assert res.semantics == "paper"


@pytest.mark.parametrize("weighted", [True, False])
def test_warm_refinement_keeps_the_planted_set_and_prefers_high_gates(weighted):
    required, groups = {2, 11, 30}, [{5, 6, 7}]
    gates = {h: 0.02 for h in range(48)}
    gates.update({2: 0.99, 11: 0.97, 30: 0.9, 5: 0.95, 6: 0.6, 7: 0.55, 20: 0.7, 21: 0.65})  # 20, 21 are noise
    res = refine(Recorder(planted(required, groups)), SHAPE, gates, epsilon=0.9, N=6, weighted=weighted, seed=0,
                 strategy="bundles")
    assert is_planted_minimal(idx(res), required, groups), res.heads
    assert not res.capped and res.trace[0]["event"] == "threshold"


def test_warm_refinement_restores_heads_in_gate_order_when_start_is_insufficient():
    required = {0, 1, 2, 3}
    gates = {h: 0.0 for h in range(48)}
    gates.update({0: 0.9, 1: 0.8, 2: 0.3, 3: 0.2, 4: 0.25})  # gate_threshold 0.5 keeps only 0 and 1
    res = refine(Recorder(planted(required, [])), SHAPE, gates, epsilon=0.9, N=4, seed=1, strategy="bundles")
    events = [t["event"] for t in res.trace]
    assert "restored_in_gate_order" in events
    restored = next(t for t in res.trace if t["event"] == "restored_in_gate_order")
    assert restored["added"] == 3  # in gate order 2 (0.3), 4 (0.25), 3 (0.2): 3 is the third added
    assert idx(res) == required


@pytest.mark.parametrize("missing, batch, max_calls", [
    (100, 1, 2),    # a warm start one head short: everything allowed, then prefix 1
    (190, 1, 16),   # 91 heads back: exponential then binary search, not 91 prefixes one by one
    (190, 4, 6),    # four prefixes per call: fewer rounds
])
def test_restoring_in_gate_order_takes_logarithmically_many_evaluations(missing, batch, max_calls):
    shape = (20, 10)  # 200 heads; gates fall with the index, so the rest is restored in index order
    gates = {h: 1 - h / 200 for h in range(200)}
    calls: list[int] = []
    rec = Recorder(planted({0, missing}, [], calls))
    C0 = set(range(100))
    C, score = restore_in_gate_order(rec, shape, C0, gates, 0.9, random.Random(0), batch=batch)
    assert C == set(range(missing + 1)) and score == 1.0  # the smallest sufficient prefix
    assert len(calls) <= max_calls, calls
    assert rec.trace[-1]["event"] == "restored_in_gate_order" and rec.trace[-1]["added"] == missing - 99


def test_macro_layer_search_selects_the_planted_layers_and_reports_both_drops():
    important = {2, 3}  # layers whose heads carry the score

    def evaluate_many(masks):
        return [0.5 + 0.25 * float(m[2].sum() > 0) + 0.25 * float(m[3].sum() > 0) for m in masks]
    rec = Recorder(evaluate_many)
    res = macro_layer_search(rec, (10, 2), window=2, percentile=80)
    assert res.window == 2 and res.evaluations == 10  # 9 full windows + S(M)
    assert set(res.layers_paper) == important == set(res.layers_corrected)
    # the paper's 75th percentile with 8 of 10 layers tied at zero drop keeps every layer (ties kept)
    assert macro_layer_search(Recorder(evaluate_many), (10, 2), window=2).layers_paper == tuple(range(10))
    assert res.drops[2] == pytest.approx(0.25) and res.drops_corrected[2] > res.drops_corrected[0]


def test_edge_correction_removes_the_edge_bias():
    """Each layer alone costs the same small amount, so every window drops equally except that
    edge layers sit in fewer windows: the best-window drop picks the edges, the mean does not."""
    def evaluate_many(masks):
        return [1.0 - 0.01 * float((m.sum(-1) == 0).sum()) - 0.05 * float(m[4].sum() == 0) for m in masks]
    res = macro_layer_search(Recorder(evaluate_many), (10, 2), window=3, percentile=90)
    assert 0 in res.layers_paper or 9 in res.layers_paper or 4 in res.layers_paper
    assert res.layers_corrected == (4,)


def test_threshold_checks_epsilon_and_reachability():
    assert threshold_value(0.9, 0.5, 0.5) == pytest.approx(0.7)
    assert threshold_value(0.9, 0.5, 0.5, absolute=0.6) == 0.6
    with pytest.raises(KmshcError, match=r"\(0, 1\]"):
        threshold_value(0.9, 0.5, 0.0)
    with pytest.raises(KmshcError, match="0.8000"):
        threshold_value(0.8, 0.5, 0.5, absolute=0.95)
    with pytest.raises(KmshcError, match="baseline"):
        threshold_value(0.5, 0.6, 0.9)


def test_bundle_floor_larger_than_candidates_is_an_error():
    with pytest.raises(KmshcError, match="K"):
        cold_search(Recorder(planted({1}, [])), (1, 4), semantics="paper", K=5, macro=False)


def test_draw_bundles_enumerates_small_pools_and_honours_weights():
    rng = random.Random(0)
    assert draw_bundles(rng, [3, 1, 2], 2, 10) == [(1, 2), (1, 3), (2, 3)]
    heavy = {h: (1.0 if h < 2 else 1e-4) for h in range(20)}
    bundles = draw_bundles(rng, list(range(20)), 2, 5, heavy)
    assert bundles[0] == (0, 1) and len(set(bundles)) == len(bundles)
    some = {h: (1.0 if h < 5 else 0.1) for h in range(20)}
    counts = [0] * 20
    for _ in range(200):
        for h in draw_bundles(rng, list(range(20)), 1, 1, some)[0]:
            counts[h] += 1
    assert sum(counts[:5]) > 3 * sum(counts[5:10])
    assert sorted(h for b in draw_bundles(rng, list(range(20)), 3, 7) for h in b if h >= 20) == []


def test_names_are_sorted_and_formatted():
    assert names({9, 0}, (2, 8)) == ("L0H0", "L1H1")


def test_a_one_mask_evaluate_works_through_batched():
    many = planted({4, 5}, [])
    single_calls = []

    def evaluate(mask):
        single_calls.append(1)
        return many(mask[None])[0]
    res = cold_search(Recorder(batched(evaluate)), SHAPE, semantics="keep", seed=0)
    assert idx(res) == {4, 5} and res.evaluations == len(single_calls)


@pytest.mark.parametrize("seed", range(3))
def test_ordered_warm_refinement_spends_one_evaluation_per_start_head_plus_the_unconfirmed_ones(seed):
    """Deletion filter on a monotone evaluator: threshold (2) + S(C0) (1) + one per start head +
    a confirming pass over the result, where only heads kept *before* the last drop cost a new
    evaluation (the others were already tested on the final set); the result is the planted
    minimal set."""
    rng = random.Random(seed)
    heads = rng.sample(range(48), 14)
    required, groups = set(heads[:4]), [set(heads[4:7])]
    gates = {h: 1.0 if h in heads else 0.0 for h in range(48)}  # saturated: gates order nothing
    importance = {h: (5.0 if h in required else 2.0 + 0.1 * i) for i, h in enumerate(heads)}
    res = refine(Recorder(planted(required, groups)), SHAPE, gates, epsilon=0.9, seed=seed,
                 strategy="ordered", importance=importance)
    assert is_planted_minimal(idx(res), required, groups), res.heads
    # order: the three OR-group heads, the seven free ones (all dropped), the four required (kept
    # after the last drop, so their test was already on the final set): one head to re-confirm
    assert res.evaluations == 3 + 14 + 1
    # least important first: the OR-group head kept is the group's most important one
    kept = (idx(res) - required).pop()
    assert kept == max(groups[0], key=lambda h: importance[h])


def test_importance_weights_rank_saturated_gates_by_log_alpha():
    from kmshc.search.refine import importance_weights
    w = importance_weights({1: 7.0, 2: 3.0, 3: 5.0}, {1, 2, 3})
    assert w[2] > w[3] > w[1] and max(w.values()) == 1.0


def test_unknown_warm_strategy_is_rejected():
    with pytest.raises(KmshcError, match="strategy"):
        refine(Recorder(planted({1}, [])), SHAPE, {1: 1.0}, strategy="greedy")


def test_a_search_margin_keeps_more_heads_and_is_recorded_in_the_threshold():
    """Additive planted score: each required head adds 0.1 (S(M) = 1, S(∅) = 0.5). At ε = 0.75,
    U = 0.875 and any 4 of the 5 suffice; with a margin of 0.05 (0.925) all 5 are needed."""
    required = {2, 11, 20, 29, 38}

    def additive(masks):
        return [0.5 + 0.1 * len(required & set(torch.nonzero(m.reshape(-1) > 0.5).flatten().tolist()))
                for m in masks]
    plain = cold_search(Recorder(additive), SHAPE, semantics="keep", epsilon=0.75, N=6, seed=0)
    strict = cold_search(Recorder(additive), SHAPE, semantics="keep", epsilon=0.75, N=6, seed=0, margin=0.05)
    assert len(idx(plain)) == 4 and idx(strict) == required
    assert strict.threshold == pytest.approx(plain.threshold + 0.05)


@pytest.mark.parametrize("margin", [-0.01, 0.2, float("nan")])
def test_a_search_margin_that_is_negative_or_unreachable_is_a_clear_error(margin):
    with pytest.raises(KmshcError, match="search_margin"):
        cold_search(Recorder(planted({1}, [])), SHAPE, semantics="keep", epsilon=0.9, seed=0, margin=margin)


def test_galloping_deletion_drops_runs_of_unneeded_heads_in_blocks_and_ends_where_the_filter_does():
    from kmshc.search.micro import ordered_deletion
    from kmshc.search.state import Recorder
    import random as _random
    needed = {21, 29}  # S = number of needed heads present: both are needed at U = 2
    def evaluate(masks):
        return [float(sum(bool(m.reshape(-1)[h] > 0.5) for h in needed)) for m in masks]
    order = list(range(30))  # least important first: a run of 21 unneeded heads, then 7 between the needed two
    runs = {}
    for gallop in (False, True):
        rec = Recorder(evaluate)
        C, score = ordered_deletion(rec, (5, 6), set(range(30)), 2.0, _random.Random(0), order, gallop=gallop)
        runs[gallop] = (C, rec)
        assert C == needed and score == 2.0
        for t in rec.trace:  # every block dropped kept S >= U; a failed block is no decision
            assert t["event"] in ("drop_head", "drop_block", "keep_head")
            assert (t["score"] >= 2.0) == (t["event"] != "keep_head")
        dropped = [h for t in rec.trace if t["event"] != "keep_head" for h in (t["heads"] if "heads" in t else [t["head"]])]
        assert sorted(dropped) == sorted(set(range(30)) - needed)
    assert runs[False][1].evaluations == 30
    assert runs[True][1].evaluations <= 15  # 1 + 2 + 4 + 8 heads in 4 evaluations, then smaller blocks
    assert any(t["event"] == "drop_block" for t in runs[True][1].trace)
    assert not any(t["event"] == "drop_block" for t in runs[False][1].trace)


def _with_harmful_heads(needed: set[int], harmful: set[int]):
    """``S = 0.5 + 0.1·|needed on| − 0.01·|harmful on|``: every harmful head's removal raises S."""
    def evaluate(masks):
        out = []
        for m in masks:
            on = set(torch.nonzero(m.reshape(-1) > 0.5).flatten().tolist())
            out.append(0.5 + 0.1 * len(needed & on) - 0.01 * len(harmful & on))
        return out
    return evaluate


def test_the_single_head_pass_removes_heads_that_all_pass_as_one_block():
    """Four needed heads and six harmful ones (each removal raises S). One at a time the pass
    would cost 10 + 5 + 4 + 3 + 2 + 1 + 4 = 29 evaluations; the block costs 10 + 1 + 4."""
    from kmshc.search.micro import single_head_pass
    needed, harmful = {3, 11, 19, 27}, {30, 31, 32, 33, 34, 35}
    rec = Recorder(_with_harmful_heads(needed, harmful))
    C, score, last = single_head_pass(rec, SHAPE, needed | harmful, 0.82, random.Random(0))  # S(start) = 0.84
    assert C == needed and score == pytest.approx(0.9)
    assert rec.evaluations == 15
    assert [t["event"] for t in rec.trace] == ["remove_block", "one_minimal"]
    assert rec.trace[0]["heads"] == sorted(harmful)
    assert set(last) == needed and max(last.values()) < 0.82


def test_a_block_that_misses_the_bar_falls_back_to_one_head_at_a_time_and_stays_one_minimal():
    """An OR-group of three: each head alone is removable, all three together are not. The block
    costs one evaluation, then the pass removes single heads and keeps one head of the group."""
    from kmshc.search.micro import single_head_pass
    required, group = {1, 9}, {20, 21, 22}
    rec = Recorder(planted(required, [group]))
    C, _, last = single_head_pass(rec, SHAPE, required | group, 0.99, random.Random(0))
    assert is_planted_minimal(C, required, [group])
    events = [t["event"] for t in rec.trace]
    assert "remove_block" not in events and events.count("remove_head") == 2 and events[-1] == "one_minimal"
    assert all(s < 0.99 for s in last.values())
