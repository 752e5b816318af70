"""The certificate's rules on one split, as pure functions of per-example values.

Bounds are one-sided at level ``1 − α/2`` each (Fieller, :func:`kmshc.stats.recovery_bounds`),
so that the ε-range holds for all of its targets at once; the drop tests are Holm-corrected
at ``α`` over the heads of one set. docs/certificate.md states the claim and why these levels.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from kmshc import stats
from kmshc.search.certificate import CertificateConfig, Estimate, Removal


def _r(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), 4)


@dataclass(frozen=True)
class Checks:
    """The certificate's rules on one split: per-example metric values of ``M`` and ``B`` ``[n]``."""

    x_full: np.ndarray
    x_base: np.ndarray
    epsilon: float
    cfg: CertificateConfig
    metric: str = "accuracy"

    @property
    def level(self) -> float:
        # α/2 per side: the ε-range holds for all of its targets at once (docs/certificate.md)
        return 1 - self.cfg.alpha / 2

    def estimate(self, x: np.ndarray, acc: np.ndarray) -> Estimate:
        lo, hi = stats.recovery_bounds(x, self.x_base, self.x_full, self.level)
        return Estimate(value=round(float(x.mean()), 4), accuracy=round(float(acc.mean()), 4),
                        recovery=_r(stats.recovery(x, self.x_base, self.x_full)), lower=_r(lo), upper=_r(hi))

    def sufficient(self, e: Estimate) -> bool:
        return e.lower is not None and e.lower >= self.epsilon - self.cfg.tau

    def below_window(self, e: Estimate) -> bool:
        return e.upper is not None and e.upper < self.epsilon + self.cfg.tau

    def removals(self, heads: Sequence[str], x_set: np.ndarray, xs: Sequence[np.ndarray],
                 accs: Sequence[np.ndarray]) -> list[Removal]:
        """Classify each head of a set from the set's values ``x_set`` and its removals' ``xs``."""
        ests = [self.estimate(x, a) for x, a in zip(xs, accs)]
        ps = [stats.drop_p_value(x_set, x) for x in xs]
        reject, adjusted = stats.holm(ps, self.cfg.alpha)
        out = []
        for h, e, x, p, rej, adj in zip(heads, ests, xs, ps, reject, adjusted):
            cls = ("necessary" if rej and self.below_window(e) else
                   "removable" if self.sufficient(e) else "undecided")
            out.append(Removal(head=h, estimate=e, drop=round(float(x_set.mean() - x.mean()), 4),
                               p_value=round(p, 6), p_holm=round(adj, 6), cls=cls))
        return out

    def epsilon_range(self, circuit: Estimate, removals: Sequence[Removal]) -> list[float] | None:
        """Targets ε' for which every check passes: ``(max_h UB[r(C\\h)] − τ, LB[r(C)] + τ]``."""
        if circuit.lower is None or any(r.p_holm > self.cfg.alpha for r in removals):
            return None
        if any(r.estimate.upper is None for r in removals):
            return None
        lo = max((r.estimate.upper for r in removals), default=-math.inf) - self.cfg.tau
        hi = min(circuit.lower + self.cfg.tau, 1.0)  # epsilon lives in (0, 1]
        lo = max(lo, 0.0)
        return [round(lo, 4), round(hi, 4)] if lo < hi else None



    def usable_gap(self, acc_full: np.ndarray, acc_base: np.ndarray, circuit: Estimate) -> tuple[bool, float]:
        """``(usable, lower bound of the accuracy gap)``: the gap must be at least ``min_gap`` with
        confidence, and the metric's gap significantly positive (else ``r`` is unbounded)."""
        lo = stats.mean_bound(acc_full - acc_base, self.level, "lower")
        return bool(lo >= self.cfg.min_gap and circuit.lower is not None), lo

    def keep_verdict(self, circ: Estimate, removals: Sequence[Removal]) -> tuple[bool, list[str], list[str]]:
        """``(passes, reasons, failing heads)`` of keep semantics, the gap aside: sufficient within
        ``τ``, and every head ``necessary``."""
        why, failing = [], []
        if not self.sufficient(circ):
            why.append(f"insufficient: lower bound of r(C) = {circ.lower} < eps - tau = "
                       f"{self.epsilon - self.cfg.tau:.4f}")
        for cls, note in (("removable", "C without it still clears eps - tau"),
                          ("undecided", "drop not significant, or recovery without it not below eps + tau")):
            hs = [r.head for r in removals if r.cls == cls]
            if hs:
                failing += hs
                why.append(f"{cls}: {', '.join(hs)} ({note})")
        return self.sufficient(circ) and not failing, why, failing


def verify_values(x_full: np.ndarray, x_base: np.ndarray, x_circuit: np.ndarray, x_removals: Sequence[np.ndarray],
                  *, epsilon: float, cfg: CertificateConfig, metric: str = "accuracy",
                  acc: Sequence[np.ndarray] | None = None) -> bool:
    """The keep-semantics verdict from per-example values alone (no controls): what the
    calibration simulation checks. ``acc``: 0/1 accuracies ``[M, B, C]`` when ``metric`` is not
    accuracy (for the gap check); defaults to the values themselves."""
    chk = Checks(x_full, x_base, epsilon, cfg, metric)
    a_full, a_base, a_c = acc if acc is not None else (x_full, x_base, x_circuit)
    circ = chk.estimate(x_circuit, a_c)
    usable, _ = chk.usable_gap(a_full, a_base, circ)
    if not usable:
        return False
    heads = [f"h{i}" for i in range(len(x_removals))]
    removals = chk.removals(heads, x_circuit, list(x_removals), list(x_removals))
    return chk.keep_verdict(circ, removals)[0] and bool(heads)
