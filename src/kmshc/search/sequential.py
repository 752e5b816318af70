"""Certify until decided: the certificate's checks re-run on a growing test sample (pure core).

A fixed-n certificate that cannot decide leaves three outcomes under one ``verified: False``: the
circuit is wrong, the split was too small, or the task has no usable gap. Here each check of keep
semantics is one sequential test with three outcomes:

* ``gap``: the full-vs-baseline accuracy gap is at least ``min_gap`` (passes) or its upper bound
  is below it (refuted: no usable gap);
* ``sufficiency``: the lower bound of ``r(C)`` clears ``ε − τ`` (passes) or its upper bound is
  below ``ε − τ`` (refuted: insufficient);
* one per head ``h``: ``necessary`` (passes), ``removable`` (refuted: ``C \\ {h}`` clears
  ``ε − τ``), else open.

Looks come at a fixed schedule of cumulative sample sizes (:func:`schedule`: the test split, then
doubling, up to a cap). Look ``k`` spends ``α(t_k) − α(t_{k−1})`` of ``α(t) = α·t^ρ`` with
``t = n_k / n_K`` (Lan and DeMets 1983; the power family of Kim and DeMets 1987), the same error
spending as the search's adaptive decisions: a check's rules are run at confidence
``1 − α_k`` on every item seen so far. By the union bound a check that should not pass passes at
some look with probability at most ``α``; a verdict needs every check to pass, so "verified" is
wrong at most ``α`` of the time, however early it stops. A check that has passed or been refuted
is not looked at again, so later rounds score only ``M``, ``B``, ``C`` and the open removals.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Callable, Mapping, Sequence

import numpy as np

from kmshc import stats
from kmshc.search.certificate import CertificateConfig, Estimate, Look, Removal
from kmshc.search.checks import Checks

OPEN, PASSED, REFUTED = "open", "passed", "refuted"
Values = Mapping[str, tuple[np.ndarray, np.ndarray]]  # row -> (metric values [n], 0/1 accuracy [n])


def schedule(n0: int, cap: int | None) -> list[int]:
    """Cumulative sample sizes of the looks: ``n0``, then doubling, ending exactly at ``cap``
    (``[n0]`` when ``cap`` is None or at most ``n0``: the fixed-n certificate). A doubling that
    would leave less than half a step to the cap goes to the cap at once: a last look a few items
    past the one before it would spend error on almost no new evidence."""
    if n0 < 1:
        raise ValueError(f"n0 must be positive, got {n0}")
    sizes = [n0]
    while cap is not None and sizes[-1] < cap:
        nxt = 2 * sizes[-1]
        sizes.append(cap if cap - nxt < nxt - sizes[-1] else nxt)
    return sizes


def look_alphas(sizes: Sequence[int], alpha: float, power: float) -> list[float]:
    """Error spent at each look of ``sizes``: increments of ``α·(n_k / n_K)^power``; they sum to ``α``."""
    cum = [alpha * (n / sizes[-1]) ** power for n in sizes]
    return [cum[0]] + [cum[k] - cum[k - 1] for k in range(1, len(cum))]


@dataclass
class Decision:
    """One check: its status, the look that decided it (or the last one), and its numbers there."""

    status: str = OPEN
    look: int = 0
    estimate: Estimate | None = None
    removal: Removal | None = None
    n_needed: int | None = None


@dataclass
class Sequential:
    """The checks of a keep-semantics certificate for ``heads``, decided look by look.

    ``rows`` passed to :meth:`look` hold cumulative values of ``full``, ``base``, ``circuit`` and
    of each still-open head's removal (keyed by the head's name), all on the same items.
    """

    heads: Sequence[str]
    epsilon: float
    cfg: CertificateConfig
    metric: str = "accuracy"
    checks: dict[str, Decision] = field(default_factory=dict)
    gap_lower: float = math.nan

    def __post_init__(self) -> None:
        self.checks = {"gap": Decision(), "sufficiency": Decision(), **{h: Decision() for h in self.heads}}

    @property
    def open_heads(self) -> list[str]:
        return [h for h in self.heads if self.checks[h].status == OPEN]

    @property
    def rows_needed(self) -> list[str]:
        """What the next round must score: nothing once decided."""
        return [] if self.verdict != "undecided" else ["full", "base", "circuit", *self.open_heads]

    @property
    def verdict(self) -> str:
        statuses = [d.status for d in self.checks.values()]
        if REFUTED in statuses:
            return "refuted"
        return "verified" if self.heads and all(s == PASSED for s in statuses) else "undecided"

    def look(self, rows: Values, alpha: float, k: int) -> None:
        """Run every open check at confidence ``1 − alpha`` on ``rows``; record what it decides."""
        chk = Checks(rows["full"][0], rows["base"][0], self.epsilon, replace(self.cfg, confidence=1 - alpha),
                     self.metric)
        circ = chk.estimate(*rows["circuit"])
        self._gap(chk, rows, circ, k)
        self._decide("sufficiency", k, circ, passed=chk.sufficient(circ),
                     refuted=circ.upper is not None and circ.upper < self.epsilon - self.cfg.tau)
        heads = self.open_heads
        if heads:
            rem = chk.removals(heads, rows["circuit"][0], [rows[h][0] for h in heads], [rows[h][1] for h in heads])
            for h, r in zip(heads, rem):
                self.checks[h] = Decision({"necessary": PASSED, "removable": REFUTED}.get(r.cls, OPEN), k,
                                          r.estimate, r)

    def _gap(self, chk: Checks, rows: Values, circ: Estimate, k: int) -> None:
        d = rows["full"][1] - rows["base"][1]
        lo, hi = (stats.mean_bound(d, chk.level, side) for side in ("lower", "upper"))
        if self.checks["gap"].status == OPEN:
            self.gap_lower = lo
        self._decide("gap", k, None, passed=lo >= self.cfg.min_gap and circ.lower is not None,
                     refuted=hi < self.cfg.min_gap)

    def _decide(self, name: str, k: int, est: Estimate | None, *, passed: bool, refuted: bool) -> None:
        if self.checks[name].status == OPEN:
            self.checks[name] = Decision(PASSED if passed else REFUTED if refuted else OPEN, k, est)

    def plan_needs(self, rows: Values, alpha: float) -> None:
        """Fill ``n_needed`` of each open check: the items one look at error ``alpha`` would need to
        pass it with 80% power, from the effects seen (``None``: it points the wrong way)."""
        xm, xb = rows["full"][0], rows["base"][0]
        xc = rows["circuit"][0]
        lo_bar, hi_bar = self.epsilon - self.cfg.tau, self.epsilon + self.cfg.tau
        needs = {"gap": lambda: stats.n_needed(rows["full"][1] - rows["base"][1] - self.cfg.min_gap, alpha / 2),
                 "sufficiency": lambda: stats.n_needed((xc - xb) - lo_bar * (xm - xb), alpha / 2)}
        for name, d in self.checks.items():
            if d.status != OPEN:
                continue
            if name in needs:
                d.n_needed = needs[name]()
                continue
            xh = rows[name][0]
            ns = [stats.n_needed(xc - xh, alpha / max(1, len(self.open_heads))),
                  stats.n_needed(hi_bar * (xm - xb) - (xh - xb), alpha / 2)]
            d.n_needed = None if None in ns else max(ns)


def run_looks(seq: Sequential, first: Values, more: Callable[[int, int, list[str]], tuple[Values, str] | None],
              sizes: Sequence[int], alphas: Sequence[float], source: str) -> tuple[list[Look], Values]:
    """Look at ``first`` (``sizes[0]`` items), then while undecided ask ``more(k, count, rows)`` for
    ``count`` fresh items' values of ``rows`` (and a description of their source); ``None`` when the
    source has run out. Returns the looks and the cumulative values at the last one."""
    rows = dict(first)
    seq.look(rows, alphas[0], 0)
    looks = [Look(sizes[0], sizes[0], round(alphas[0], 6), source, _open(seq))]
    for k in range(1, len(sizes)):
        need = seq.rows_needed
        if not need:
            break
        got = more(k, sizes[k] - sizes[k - 1], need)
        if got is None:
            break
        new, where = got
        rows = {r: tuple(np.concatenate([rows[r][j], new[r][j]]) for j in (0, 1)) for r in need}
        seq.look(rows, alphas[k], k)
        looks.append(Look(len(rows["full"][0]), len(new["full"][0]), round(alphas[k], 6), where, _open(seq)))
    if seq.verdict == "undecided":
        seq.plan_needs(rows, alphas[-1])
    return looks, rows


def _open(seq: Sequential) -> list[str]:
    return [name for name, d in seq.checks.items() if d.status == OPEN]
