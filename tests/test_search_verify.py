"""The certificate on planted per-example outcomes, and the pure statistics behind it."""
from __future__ import annotations

import math

import pytest
import torch

from kmshc.scoring import Outcome
from kmshc.search import certify
from kmshc.search.stats import (bootstrap_indices, bootstrap_means, mcnemar_p, one_sided_p_at_least,
                                percentile_interval, zero_failure_bound)

SHAPE = (2, 4)  # flat heads 0..7 are L0H0..L1H3


def planted_outcomes(needs: list[set[int]], fallback: list[int], calls: list | None = None):
    """Example i is right when the mask keeps any head of ``needs[i]`` (always, if empty),
    else it is ``fallback[i]``. Margins are ±1."""
    def outcomes(masks: torch.Tensor) -> Outcome:
        if calls is not None:
            calls.append(masks.shape[0])
        rows = []
        for m in masks:
            on = set(torch.nonzero(m.reshape(-1) > 0.5).flatten().tolist())
            rows.append([1.0 if (not nd or nd & on) else float(fb) for nd, fb in zip(needs, fallback)])
        correct = torch.tensor(rows)
        return Outcome(correct, 2 * correct - 1)
    return outcomes


@pytest.fixture
def task():
    """400 examples: heads 0-3 each carry 75 (half fail without them), head 4 carries 44 (22 fail),
    the rest need nothing. S(∅) = 0.5725, U(0.9) ≈ 0.957, S({0..3}) ≈ 0.945, S({0..4}) = 1."""
    needs, fallback = [], []
    for i in range(400):
        needs.append({i // 75} if i < 300 else ({4} if i < 344 else set()))
        fallback.append(i % 2 if i < 344 else 1)
    return planted_outcomes(needs, fallback)


def test_minimal_circuit_verifies_with_the_classification(task):
    cert = certify(task, SHAPE, ["L0H0", "L0H1", "L0H2", "L0H3", "L1H0"], epsilon=0.9, n_boot=500)
    assert cert["verified"] and cert["failing_heads"] == []
    assert cert["circuit"]["accuracy"] == 1.0 and cert["circuit"]["margin_recovery"] == pytest.approx(1.0)
    classes = {r["head"]: r["class"] for r in cert["removals"]}
    assert classes == {"L0H0": "necessary_significant", "L0H1": "necessary_significant",
                       "L0H2": "necessary_significant", "L0H3": "necessary_significant",
                       "L1H0": "necessary_not_significant"}
    assert cert["n"] == 400 and cert["evaluations"] == 3 + 5
    assert cert["threshold"]["ci"][0] <= cert["threshold"]["value"] <= cert["threshold"]["ci"][1]
    lo, hi = cert["full"]["ci"]
    assert lo <= cert["full"]["accuracy"] <= hi


def test_non_minimal_circuit_fails_and_names_the_removable_heads(task):
    cert = certify(task, SHAPE, ["L0H0", "L0H1", "L0H2", "L0H3", "L1H0", "L1H3"], epsilon=0.9, n_boot=500)
    assert not cert["verified"]
    assert cert["failing_heads"] == ["L1H3"]
    assert any("1-minimal" in r for r in cert["reasons"])
    removal = next(r for r in cert["removals"] if r["head"] == "L1H3")
    assert removal["class"] == "removable" and removal["delta"] == 0.0 and removal["mcnemar_p"] == 1.0


def test_insufficient_circuit_fails_and_names_its_heads(task):
    cert = certify(task, SHAPE, ["L0H0", "L0H1", "L0H2"], epsilon=0.9, n_boot=500)
    assert not cert["verified"]
    assert cert["circuit"]["accuracy"] < cert["threshold"]["value"]
    assert set(cert["failing_heads"]) == {"L0H0", "L0H1", "L0H2"}
    assert any(r.startswith("insufficient") for r in cert["reasons"])
    assert cert["circuit"]["p_below_threshold"] > 0.95


def test_paper_semantics_restore_checks():
    group = {1, 5}  # any one of them restores every example
    outcomes = planted_outcomes([group] * 200, [i % 2 for i in range(200)])
    ok = certify(outcomes, SHAPE, ["L0H1", "L1H1"], semantics="paper", epsilon=0.9, n_boot=300)
    assert ok["verified"] and ok["sampled"] is False and ok["n_samples"] == 2 and ok["bound"] == 0.0
    assert all(r["passes"] for r in ok["restores"])
    assert ok["circuit"]["ablated_accuracy"] == pytest.approx(0.5)
    bad = certify(outcomes, SHAPE, ["L0H1", "L1H1", "L0H3"], semantics="paper", epsilon=0.9, n_boot=300)
    assert not bad["verified"] and bad["failing_heads"] == ["L0H3"]


def test_paper_semantics_samples_bundles_and_states_a_bound():
    outcomes = planted_outcomes([set()] * 50, [1] * 50)  # everything passes
    heads = [f"L{l}H{h}" for l in range(2) for h in range(4)]
    cert = certify(outcomes, SHAPE, heads, semantics="paper", K=4, restore_samples=20, n_boot=100)
    assert cert["sampled"] and cert["n_samples"] == 20 < math.comb(8, 4)
    assert cert["bound"] == pytest.approx(zero_failure_bound(20), abs=1e-4)


def test_certificate_scores_every_mask_in_one_batched_call(task):
    calls: list[int] = []
    needs = [{0}] * 10
    certify(planted_outcomes(needs, [0] * 10, calls), SHAPE, ["L0H0", "L0H1"], n_boot=50)
    assert calls == [3 + 2]


def test_mcnemar_exact_values():
    a = torch.tensor([1.0] * 10 + [0.0] * 10)
    assert mcnemar_p(a, a) == 1.0
    b = a.clone()
    b[:6] = 0  # 6 discordant, all one way: p = 2 / 2**6
    assert mcnemar_p(a, b) == pytest.approx(2 / 64)


def test_bootstrap_pieces():
    idx = bootstrap_indices(50, 400, seed=1)
    assert idx.shape == (400, 50) and torch.equal(idx, bootstrap_indices(50, 400, seed=1))
    values = torch.tensor([[1.0] * 40 + [0.0] * 10, [1.0] * 50])
    boot = bootstrap_means(values, idx)
    lo, hi = percentile_interval(boot[0])
    assert lo < 0.8 < hi and percentile_interval(boot[1]) == (1.0, 1.0)
    assert one_sided_p_at_least(boot[0] - 0.5) == 1.0
    assert one_sided_p_at_least(boot[0] - 0.99) < 0.01


def test_zero_failure_bound_is_the_rule_of_three():
    assert zero_failure_bound(300) == pytest.approx(3 / 300, rel=0.01)
    assert zero_failure_bound(0) == 1.0
