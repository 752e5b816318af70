"""The certificate is calibrated: simulated circuits with a known truth (kmshc.search.calibration).

Over 1,400 simulated circuits that are truly NOT minimal-sufficient within tau (insufficient at
and below the edge, an irrelevant head, a removal at and above the window's upper edge), the
certificate verifies at most alpha of them plus Monte-Carlo error; and it verifies a truly
minimal-sufficient circuit with margin in at least 80% of cases at n = 400 and a 0.4 gap.
"""
from __future__ import annotations

import gc
import math

import numpy as np
import pytest
from statsmodels.stats.multitest import multipletests

from kmshc import stats
from kmshc.search.calibration import Case, draw, grid, sequential_verdicts, simulate
from kmshc.search.certificate import CertificateConfig

CFG = CertificateConfig()  # 95%, tau = 0.05
EPS = 0.9
REPS = 100


@pytest.mark.parametrize("metric", ["accuracy", "margin"])
def test_false_certification_rate_is_at_most_alpha(metric):
    cases = [c for c in grid(EPS, CFG.tau, ns=(200, 400), metric=metric) if not c.truly_certifiable(EPS, CFG.tau)]
    rates = [simulate(c, reps=REPS, seed=i) for i, c in enumerate(cases)]
    total = len(cases) * REPS
    assert total >= 1000
    mc = 3 * math.sqrt(CFG.alpha * (1 - CFG.alpha) / total)  # three Monte-Carlo standard errors
    assert float(np.mean(rates)) <= CFG.alpha + mc, list(zip([c.name for c in cases], rates))
    # no single cell may be far off either (each has REPS draws)
    assert max(rates) <= CFG.alpha + 3 * math.sqrt(CFG.alpha * (1 - CFG.alpha) / REPS)


@pytest.mark.parametrize("metric", ["accuracy", "margin"])
def test_power_on_a_minimal_sufficient_circuit_with_margin(metric):
    case = Case("minimal-sufficient with margin", 400, 0.4, 1.0, (0.7, 0.7, 0.7), metric)
    assert case.truly_certifiable(EPS, CFG.tau)
    assert simulate(case, reps=REPS, seed=7) >= 0.8


def test_a_lenient_certificate_would_fail_the_calibration_check():
    """The check can fail: judged by point estimates (what verified used to mean), circuits at the
    edge verify about half the time."""
    case = Case("insufficient, at the edge", 400, 0.4, EPS - CFG.tau - 0.001, (0.5, 0.5, 0.5))
    x = draw(case, np.random.default_rng(0), reps=REPS)
    hits = sum(stats.recovery(xc, xb, xm) >= EPS - CFG.tau for xm, xb, xc, *_ in x)
    assert hits / REPS > CFG.alpha + 3 * math.sqrt(CFG.alpha * (1 - CFG.alpha) / REPS)


def test_holm_matches_statsmodels(monkeypatch):
    # multipletests calls gc.collect() on every call (~0.3 s each with torch loaded); the
    # comparison does not depend on it
    monkeypatch.setattr(gc, "collect", lambda *a: 0)
    rng = np.random.default_rng(1)
    for _ in range(20):
        p = rng.uniform(0, 0.2, size=int(rng.integers(1, 9))).tolist()
        reject, adjusted = stats.holm(p, 0.05)
        ref_reject, ref_adj, _, _ = multipletests(p, alpha=0.05, method="holm")
        assert reject == list(ref_reject) and np.allclose(adjusted, ref_adj)


@pytest.mark.parametrize("metric", ["accuracy", "margin"])
def test_the_sequential_certificate_stays_calibrated_and_decides(metric):
    """Certify until decided (fresh draws up to 8x the test split): over every false case, verified
    at most alpha + 3 Monte-Carlo SE of the time; truly certifiable circuits are verified far more
    often than at one look, and seldom refuted."""
    cases = grid(EPS, CFG.tau, ns=(200, 400), metric=metric)
    false = [c for c in cases if not c.truly_certifiable(EPS, CFG.tau)]
    rates = [sequential_verdicts(c, reps=REPS, cap=8 * c.n, seed=i) for i, c in enumerate(false)]
    mc = 3 * math.sqrt(CFG.alpha * (1 - CFG.alpha) / (len(false) * REPS))
    assert float(np.mean([r["verified"] for r in rates])) <= CFG.alpha + mc, rates
    true = [c for c in cases if c.truly_certifiable(EPS, CFG.tau)]
    for i, c in enumerate(true):
        seq = sequential_verdicts(c, reps=REPS, cap=8 * c.n, seed=100 + i)
        assert seq["refuted"] <= CFG.alpha + 3 * math.sqrt(CFG.alpha * (1 - CFG.alpha) / REPS), (c, seq)
        assert seq["verified"] >= simulate(c, reps=REPS, seed=100 + i) - 0.05, (c, seq)


def test_the_calibration_check_can_fail_for_a_sequential_certificate_that_repeats_fixed_n_tests():
    """Re-running the fixed-n rules at full alpha on every look (what certify-until-decided must not
    do) verifies a circuit at the edge of insufficiency more often than alpha allows."""
    case = Case("insufficient, at the edge", 100, 0.4, EPS - CFG.tau - 0.001, (0.5, 0.5, 0.5), "accuracy")
    naive = [CFG.alpha] * 6  # the whole alpha at each of the looks at 100, 200, ..., 3200
    rate = sequential_verdicts(case, reps=400, cap=3200, alphas=naive, seed=5)["verified"]
    assert rate > CFG.alpha + 3 * math.sqrt(CFG.alpha * (1 - CFG.alpha) / 400), rate
