"""The search's confident decisions (kmshc.search.decide): error rates by simulation, and savings."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from kmshc.engine.readout import Outcome
from kmshc.search.decide import RecoveryScores, spending, split_chunks

FULL, BASE, A = torch.ones(1, 4), torch.zeros(1, 4), torch.tensor([[1.0, 0, 0, 0]])
EPS, CONF = 0.9, 0.9


ROW = {4: 0, 0: 1, 1: 2, 2: 3}  # row of x by the mask's head count: FULL, BASE, A and a 2-head set


def fake(x: torch.Tensor, part: slice, calls: list):
    """Outcomes of the masks FULL, BASE, A (rows 0, 1, 2 of ``x`` ``[3 or 4, n]``) and a 2-head
    set (row 3) on examples ``part``."""
    def outcomes(masks: torch.Tensor) -> Outcome:
        rows = x[[ROW[int(m.sum())] for m in masks], part]
        calls.append(rows.numel())
        return Outcome((rows > 0).float(), rows)
    return outcomes


def draws(r_true: float, n: int, rng, reps: int) -> torch.Tensor:
    """``reps`` independent draws of per-example margins ``[reps, 3, n]`` of FULL, BASE and A, made at
    once: a shared difficulty per example plus each set's own noise."""
    shared = rng.normal(0, 1, (reps, 1, n))
    means = np.array([2.0, 0.0, 2 * r_true])[None, :, None]
    return torch.from_numpy(means + shared + rng.normal(0, 0.5, (reps, 3, n)))


def decider(x: torch.Tensor, adaptive: bool, calls: list) -> RecoveryScores:
    """The decision on one draw ``x`` ``[3, n]``, fixed-n or in 4 adaptive looks."""
    n = x.shape[-1]
    parts = split_chunks(n, 4) if adaptive else [slice(0, n)]
    return RecoveryScores([fake(x, p, calls) for p in parts], full_mask=FULL, base_mask=BASE, metric="margin",
                          epsilon=EPS, confidence=CONF, adaptive=adaptive)


REPS = 2000
ALPHA = 1 - CONF
# the largest rate still consistent with "error <= alpha": alpha plus 2.58 binomial standard errors
# (a one-sided 0.5% test), so a true rate of alpha passes and one of 1.2 alpha or more fails
BOUND = ALPHA + 2.58 * math.sqrt(ALPHA * (1 - ALPHA) / REPS)


def boundary_error_rate(adaptive: bool, alphas: list[float] | None = None) -> float:
    """How often a set whose true recovery is exactly eps is called "above eps" over REPS draws;
    ``alphas`` replaces the error spent at each look (to simulate an invalid design)."""
    above = 0
    for x in draws(EPS, 400, np.random.default_rng(0), REPS):
        d = decider(x, adaptive, [])
        if alphas is not None:
            d.alphas = alphas
        above += d(A[None])[0] >= EPS
    return above / REPS


@pytest.mark.parametrize("adaptive", [False, True])
def test_error_rate_at_the_boundary_is_at_most_nominal(adaptive):
    """A set whose true recovery is exactly eps must be called "above" at most alpha of the time."""
    assert boundary_error_rate(adaptive) <= BOUND


def test_the_simulation_detects_repeated_fixed_n_looks():
    """Spending the whole alpha at each of the 4 looks (repeated fixed-n tests, not a sequential
    design) errs about twice as often as alpha: the simulation above is large enough to see it."""
    assert boundary_error_rate(True, alphas=[ALPHA] * 4) > BOUND


def test_the_test_can_fail_a_point_rule_errs_half_the_time():
    xm, xb, xa = draws(EPS, 400, np.random.default_rng(1), 400).mean(-1).unbind(-1)  # [400] each
    hits = ((xa - xb) / (xm - xb) >= EPS).double().mean()
    assert hits > 0.3


def test_adaptive_stops_early_on_clear_decisions_and_agrees_with_fixed_n():
    for r_true in (0.5, 1.3):  # clearly below and clearly above eps
        fixed_calls, adaptive_calls = [], []
        x = draws(r_true, 800, np.random.default_rng(2), 1)[0]
        fixed = decider(x, False, fixed_calls)(A[None])[0]
        quick = decider(x, True, adaptive_calls)(A[None])[0]
        assert (fixed >= EPS) == (quick >= EPS) == (r_true > EPS)
        # the decision stopped at the first look, so the set and the M/B reference were scored on
        # the first eighth only: 3 rows of 100 examples, against 3 rows of 800 for fixed-n
        assert sum(adaptive_calls) == 3 * 800 // 8 and sum(fixed_calls) == 3 * 800


def test_full_and_baseline_score_exactly_one_and_zero():
    d = decider(draws(0.7, 100, np.random.default_rng(3), 1)[0], False, [])
    assert d(torch.stack([FULL, BASE])) == [1.0, 0.0]


def test_spending_sums_to_alpha_and_chunks_tile_the_split():
    assert sum(spending(4, 0.1)) == pytest.approx(0.1) and spending(1, 0.1) == [pytest.approx(0.1)]
    parts = split_chunks(803, 4)
    assert [p.stop for p in parts][-1] == 803 and all(a.stop == b.start for a, b in zip(parts, parts[1:]))


def test_confident_search_decides_between_epsilon_and_the_certificates_sufficiency_bar():
    """A confident search decides against ε − bar_slack·τ (default half of τ): a head whose removal
    leaves 0.88 (inside [ε − τ/2, ε)) goes, which the point rule, deciding against ε, keeps; a head
    whose removal leaves 0.86 (inside [ε − τ, ε − τ/2)) stays, so the final set keeps a margin over
    the certificate's sufficiency bar ε − τ, and goes with slack 1. Recoveries here are exact."""
    from dataclasses import replace as dc_replace

    from kmshc.search.config import SearchConfig
    from kmshc.search.run import drive
    from kmshc.search.state import Recorder

    cfg = SearchConfig(semantics="keep", decision="confident", epsilon=0.9, strategy="ordered")
    assert cfg.confident and cfg.bar == pytest.approx(0.9 - cfg.certificate.tau / 2)
    gates = {"L0H0": 0.9, "L0H1": 0.8, "L0H2": 0.7, "L0H3": 0.6}

    def heads(cfg_: SearchConfig, weights: list[float]) -> set[str]:
        w = torch.tensor(weights)
        rec = Recorder(lambda masks: (masks.float().reshape(len(masks), -1) @ w).tolist())
        return set(drive(cfg_, rec, (1, 4), seed=0, gates=gates).heads)

    small = [0.6, 0.28, 0.12, 0.0]  # removing L0H2 leaves 0.88
    assert heads(cfg, small) == {"L0H0", "L0H1"}
    assert heads(dc_replace(cfg, decision="point"), small) == {"L0H0", "L0H1", "L0H2"}
    edge = [0.6, 0.26, 0.14, 0.0]  # removing L0H2 leaves 0.86
    assert heads(cfg, edge) == {"L0H0", "L0H1", "L0H2"}
    assert heads(dc_replace(cfg, bar_slack=1.0), edge) == {"L0H0", "L0H1"}
