"""The certificate on planted per-example outcomes, and the pure statistics behind it."""
from __future__ import annotations

import math

import numpy as np

import pytest
import torch

from kmshc.engine.readout import Outcome
from kmshc import stats
from kmshc.search import Certificate, CertificateConfig, certify
from kmshc.stats import bootstrap_means, percentile_interval, zero_failure_bound

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
    the rest need nothing. S(∅) = 0.5725, r({0..4}) = 1, r({0..3}) = 0.95 - 22/171 = 0.871,
    r of {0..4} without one of heads 0-3 = 1 - 37.5/171 = 0.78."""
    needs, fallback = [], []
    for i in range(400):
        needs.append({i // 75} if i < 300 else ({4} if i < 344 else set()))
        fallback.append(i % 2 if i < 344 else 1)
    return planted_outcomes(needs, fallback)


NONE = CertificateConfig(random_controls=0, extra_heads=0)


def test_minimal_circuit_verifies_with_the_classification(task):
    cert = certify(task, SHAPE, ["L0H0", "L0H1", "L0H2", "L0H3", "L1H0"], epsilon=0.9)
    assert cert.verified and cert.failing_heads == [] and cert.usable_gap
    assert cert.circuit.accuracy == 1.0 and cert.circuit.recovery == pytest.approx(1.0)
    assert {r.head: r.cls for r in cert.removals} == {h: "necessary" for h in ["L0H0", "L0H1", "L0H2", "L0H3", "L1H0"]}
    # removing head 4 leaves r = 1 - 22/171 = 0.871: inside the window, so the range starts above it
    lo, hi = cert.epsilon_range
    assert 0.871 - 0.05 < lo < 0.9 < hi == 1.0
    assert cert.n == 400 and cert.knockout.verdict == "collapse"
    assert cert.controls and not any(c.verified for c in cert.controls)
    assert {c.kind for c in cert.controls} == {"random", "plus_random", "minus_top"}
    assert Certificate.from_dict(cert.to_dict()) == cert


def test_non_minimal_circuit_fails_and_names_the_removable_heads(task):
    cert = certify(task, SHAPE, ["L0H0", "L0H1", "L0H2", "L0H3", "L1H0", "L1H3"], epsilon=0.9)
    assert not cert.verified and cert.failing_heads == ["L1H3"] and cert.epsilon_range is None
    removal = next(r for r in cert.removals if r.head == "L1H3")
    assert removal.cls == "removable" and removal.drop == 0.0 and removal.p_value == 1.0
    assert any(r.startswith("removable: L1H3") for r in cert.reasons)


def test_an_irrelevant_head_fails_even_when_C_sits_at_the_edge(task):
    """C = heads 0-3 recovers 0.871, right at eps = 0.88: plus an irrelevant head, the drop test fails."""
    cert = certify(task, SHAPE, ["L0H0", "L0H1", "L0H2", "L0H3", "L1H3"], epsilon=0.88, config=NONE)
    assert not cert.verified and "L1H3" in cert.failing_heads
    assert next(r for r in cert.removals if r.head == "L1H3").cls in ("undecided", "removable")


def test_insufficient_circuit_fails_and_says_what_would_decide(task):
    cert = certify(task, SHAPE, ["L0H0", "L0H1", "L0H2"], epsilon=0.9)
    assert not cert.verified and cert.circuit.lower < 0.85
    assert any(r.startswith("insufficient") for r in cert.reasons)
    assert cert.n_needed is None  # r(C) = 0.66 is far below eps - tau: no test split would pass it
    # it does hold at a lower target: the range is where every check passes
    lo, hi = cert.epsilon_range
    assert lo < 0.6 <= hi  # (max UB[r(C \\ h)] - tau, LB[r(C)] + tau]


def test_no_usable_gap_never_verifies():
    outcomes = planted_outcomes([{0}] * 100, [1] * 90 + [0] * 10)  # ablating everything costs 10 of 100
    cert = certify(outcomes, SHAPE, ["L0H0"], epsilon=0.9)
    assert not cert.usable_gap and not cert.verified and cert.epsilon_range is None
    assert any(r.startswith("no usable gap") for r in cert.reasons)


def test_a_control_that_verifies_makes_the_certificate_fail():
    """Every head alone restores every example: any random set is as good as C, and says so."""
    outcomes = planted_outcomes([set(range(8))] * 200, [i % 2 for i in range(200)])
    cert = certify(outcomes, SHAPE, ["L0H0"], epsilon=0.9)
    assert any(c.verified for c in cert.controls if c.kind == "random")
    assert not cert.verified and any("negative control" in r for r in cert.reasons)


def test_margin_metric_uses_margins():
    outcomes = planted_outcomes([{0}] * 200, [i % 2 for i in range(200)])
    acc = certify(outcomes, SHAPE, ["L0H0"], epsilon=0.9, config=NONE)
    mar = certify(outcomes, SHAPE, ["L0H0"], epsilon=0.9, config=NONE, metric="margin")
    assert mar.metric == "margin" and mar.full.value == pytest.approx(1.0) and acc.full.value == 1.0
    assert mar.baseline.value == pytest.approx(0.0) and acc.baseline.value == pytest.approx(0.5)


def test_paper_semantics_restore_checks():
    group = {1, 5}  # any one of them restores every example
    outcomes = planted_outcomes([group] * 200, [i % 2 for i in range(200)])
    ok = certify(outcomes, SHAPE, ["L0H1", "L1H1"], semantics="paper", epsilon=0.9)
    assert ok.verified and ok.restore_bound == 0.0 and len(ok.restores) == 2 and all(r.passes for r in ok.restores)
    assert ok.knockout.verdict == "collapse"
    bad = certify(outcomes, SHAPE, ["L0H1", "L1H1", "L0H3"], semantics="paper", epsilon=0.9)
    assert not bad.verified and bad.failing_heads == ["L0H3"]


def test_paper_semantics_needs_the_knockout_to_break_the_task():
    outcomes = planted_outcomes([set()] * 50, [1] * 50)  # nothing matters: every restore passes trivially
    heads = [f"L{l}H{h}" for l in range(2) for h in range(4)]
    cert = certify(outcomes, SHAPE, heads, semantics="paper", K=4, config=CertificateConfig(restore_samples=20))
    assert len(cert.restores) == 20 < math.comb(8, 4) and not cert.verified


def test_first_stage_is_one_batched_call(task):
    calls: list[int] = []
    certify(planted_outcomes([{0}] * 10 + [{1}] * 10, [0] * 20, calls), SHAPE, ["L0H0", "L0H1"], config=NONE)
    assert calls == [4 + 2]  # M, B, C, M \ C, two removals


def test_drop_p_value_is_the_exact_one_sided_mcnemar():
    a = np.array([1.0] * 10 + [0.0] * 10)
    assert stats.drop_p_value(a, a) == 1.0
    b = a.copy()
    b[:6] = 0  # 6 discordant, all lost: p = 1 / 2**6
    assert stats.drop_p_value(a, b) == pytest.approx(1 / 64)
    assert stats.drop_p_value(b, a) == 1.0


def test_fast_p_values_and_quantiles_match_the_scipy_wrappers():
    """drop_p_value and t_quantile call scipy.special directly; they must equal the st.* tests."""
    from scipy import stats as st
    rng = np.random.default_rng(5)
    for _ in range(20):
        n = int(rng.integers(2, 60))
        a, b = (rng.uniform(size=n) < 0.6).astype(float), (rng.uniform(size=n) < 0.5).astype(float)
        lost, gained = int(np.sum(a > b)), int(np.sum(a < b))
        ref = st.binomtest(lost, lost + gained, 0.5, alternative="greater").pvalue if lost + gained else 1.0
        assert stats.drop_p_value(a, b) == pytest.approx(ref, rel=1e-9)
        xa, xb = rng.normal(0.2, 1, n), rng.normal(0, 1, n)
        ref = st.ttest_1samp(xa - xb, 0.0, alternative="greater").pvalue
        assert stats.drop_p_value(xa, xb) == pytest.approx(ref, rel=1e-9)
        level = float(rng.uniform(0.5, 0.999))
        assert stats.t_quantile(level, n) == pytest.approx(st.t.ppf(level, df=n - 1), rel=1e-12)
    assert stats.t_quantile(0.975, 1) == pytest.approx(st.norm.ppf(0.975), rel=1e-12)


def test_fieller_bounds_contain_the_ratio_and_shrink_with_n():
    rng = np.random.default_rng(0)
    widths = []
    for n in (100, 1600):
        xm, xb = rng.normal(3, 1, n), rng.normal(0, 1, n)
        xa = 0.7 * xm + 0.3 * xb + rng.normal(0, 0.3, n)
        lo, hi = stats.recovery_bounds(xa, xb, xm, 0.975)
        assert lo < stats.recovery(xa, xb, xm) < hi
        # the bounds are the roots of mean(d)^2 = q^2 var(d) / n with d = u - rho v (np.cov's var)
        q = stats.t_quantile(0.975, n)
        for rho in (lo, hi):
            d = (xa - xb) - rho * (xm - xb)
            assert d.mean() ** 2 == pytest.approx(q * q * np.cov(d) / n, rel=1e-6)
        widths.append(hi - lo)
    assert widths[1] < widths[0] / 3
    assert stats.recovery_bounds(xb, xb, xb, 0.975) == (-math.inf, math.inf)  # no gap: unbounded


def test_bootstrap_pieces():
    values = torch.tensor([[1.0] * 40 + [0.0] * 10, [1.0] * 50])
    boot = bootstrap_means(values, 400, seed=1)
    assert boot.shape == (2, 400) and torch.equal(boot, bootstrap_means(values, 400, seed=1))
    lo, hi = percentile_interval(boot[0])
    assert lo < 0.8 < hi and percentile_interval(boot[1]) == (1.0, 1.0)


def test_zero_failure_bound_is_the_rule_of_three():
    assert zero_failure_bound(300) == pytest.approx(3 / 300, rel=0.01)
    assert zero_failure_bound(0) == 1.0
