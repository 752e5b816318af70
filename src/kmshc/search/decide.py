"""How the search scores a head set: point estimates, or confident (and adaptive) decisions.

The searches compare a score with ``U`` (:mod:`kmshc.search.micro`). With ``decision="confident"``
the search sees each set ``A`` through the *lower confidence bound of its recovery*
``r(A) = (S(A) − S(B)) / (S(M) − S(B))`` on the search split, in recovery units where
``S(M) = 1``, ``S(B) = 0`` and so ``U`` is the bar ``epsilon`` it is given (the search passes
``ε − bar_slack·τ``, :attr:`~kmshc.search.config.SearchConfig.bar`). A head is then removed only when the
circuit without it still clears the bar with confidence, so the search's choices carry less of
the winner's curse into the held-out certificate.

``adaptive=True`` scores the split in growing chunks (1/16, 1/8, 1/4, 1/2, all by default) and
stops as soon as a group-sequential test decides "≥ ε" or "< ε": the error spending
``α(t) = α·t^ρ`` (Lan and DeMets 1983; the power family of Kim and DeMets 1987; ``ρ = 2`` by
default) spends ``α(t_k) − α(t_{k−1})`` at look ``k`` on each side, so by the union bound the
decision's error stays at most ``α`` however many looks it takes. A set undecided at the last look
gets the fixed-n rule at the error left, and the score it returns is then its lower bound.

Before the last look, a decision also borrows from the set nearest to it that was already read
further (a control variate, :func:`kmshc.stats.recovery_bounds_with_control`): the search's
candidates differ from sets it has just decided by a head or two, and the per-example differences
vary far less than the values, so a few examples settle what the whole split would.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch

from kmshc import stats
from kmshc.search.seen import SeenSets
from kmshc.search.settings import DEFAULTS

Outcomes = Callable[[torch.Tensor], Any]


def metric_values(out: Any, metric: str) -> np.ndarray:
    """Per-example values ``[M, n]`` that ``S`` averages: 0/1 correctness or the log-prob margin."""
    return (out.correct if metric == "accuracy" else out.margin).double().cpu().numpy()


def point_scores(outcomes: Outcomes, metric: str) -> Callable[[torch.Tensor], list[float]]:
    """``evaluate_many`` of the point-estimate search: the mean metric value per mask."""
    return lambda masks: metric_values(outcomes(masks), metric).mean(-1).tolist()


def spending(looks: int, alpha: float, power: float = DEFAULTS.spending_power) -> list[float]:
    """Error spent at each of ``looks`` looks ``t_k = 2^(k−looks+1)`` (equally spaced in log2): the
    increments of ``α·t^power`` (Kim and DeMets 1987). ``power`` 1 spends in proportion to the
    examples read, so the search's many clear decisions stop sooner; 2 (O'Brien–Fleming-like)
    keeps 3/4 of ``α`` for the last look, where the close ones are decided."""
    t = [2.0 ** (k - looks + 1) for k in range(looks)]
    cum = [alpha * x ** power for x in t]
    return [cum[0]] + [cum[k] - cum[k - 1] for k in range(1, looks)]


class RecoveryScores:
    """``evaluate_many(masks [M, L, H]) -> M`` recovery lower bounds (see the module docstring).

    Args:
        chunks: outcome functions over consecutive, disjoint parts of the search split; one
            part for fixed-n decisions, several for adaptive ones.
        full_mask, base_mask: ``[L, H]`` masks of ``M`` and ``B``; they score exactly 1 and 0.
        confidence: the one-sided level of each decision (its error is ``1 − confidence``).
        spending_power: ``ρ`` of the adaptive error spending ``α·t^ρ`` (:func:`spending`).
        seen: where adaptive decisions keep the sets they score; a decision at a look before the
            last borrows strength from the nearest one seen on more of the split (:meth:`_bounds`).
            None: plain decisions, each from its own values only.
    """

    def __init__(self, chunks: Sequence[Outcomes], *, full_mask: torch.Tensor, base_mask: torch.Tensor,
                 metric: str, epsilon: float, confidence: float, adaptive: bool,
                 spending_power: float = DEFAULTS.spending_power, seen: SeenSets | None = None) -> None:
        self.chunks, self.metric, self.epsilon = list(chunks), metric, epsilon
        self.full_mask, self.base_mask = full_mask.bool(), base_mask.bool()
        alpha = 1 - confidence
        self.alphas = (spending(len(self.chunks), alpha, spending_power) if adaptive
                       else [0.0] * (len(self.chunks) - 1) + [alpha])
        self._ref: list[tuple[np.ndarray, np.ndarray]] = []  # per chunk scored so far: x(M), x(B)
        self._ref_upto: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # k -> chunks 0..k concatenated
        self.seen = seen if adaptive else None

    def _reference(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``x(M), x(B)`` on chunks ``0..k``, concatenated. A chunk's reference is scored the first
        time a decision reaches it: a search whose decisions all stop early never pays for the rest."""
        while len(self._ref) <= k:
            both = torch.stack([self.full_mask.float(), self.base_mask.float()])
            x = metric_values(self.chunks[len(self._ref)](both), self.metric)
            self._ref.append((x[0], x[1]))
        # asked once per open set and look; chunks 0..k never change once scored, so join them once
        if k not in self._ref_upto:
            self._ref_upto[k] = (np.concatenate([r[0] for r in self._ref[:k + 1]]),
                                 np.concatenate([r[1] for r in self._ref[:k + 1]]))
        return self._ref_upto[k]

    def __call__(self, masks: torch.Tensor) -> list[float]:
        scores: list[float | None] = [None] * masks.shape[0]
        open_ = []
        for i, m in enumerate(masks):
            if torch.equal(m.bool(), self.full_mask):
                scores[i] = 1.0
            elif torch.equal(m.bool(), self.base_mask):
                scores[i] = 0.0
            else:
                open_.append(i)
        seen: dict[int, list[np.ndarray]] = {i: [] for i in open_}
        reached: dict[int, int] = {}
        flat = {i: masks[i].bool().reshape(-1).cpu().numpy() for i in open_}
        # only sets scored in earlier calls are controls: a batch is then decided the same way whatever
        # else it holds, and a resumed search (whose saved sets may include this very batch) as well
        batch = {f.tobytes() for f in flat.values()}
        for k, chunk in enumerate(self.chunks):
            if not open_:
                break
            x = metric_values(chunk(masks[open_]), self.metric)
            last = k == len(self.chunks) - 1
            level = 1 - self.alphas[k]  # the error this look may spend (all of it at the last)
            still = []
            for j, i in enumerate(open_):
                seen[i].append(x[j])
                reached[i] = k
                lo, hi = (self._bounds(np.concatenate(seen[i]), flat[i], k, level, batch) if level < 1
                          else (-np.inf, np.inf))
                if last or lo >= self.epsilon or hi < self.epsilon:
                    # confidently below: report the upper bound (< ε), else the lower bound
                    scores[i] = float(hi if hi < self.epsilon and not last else lo)
                else:
                    still.append(i)
            open_ = still
        if self.seen is not None:
            self.seen.add([(flat[i], np.concatenate(seen[i]), k) for i, k in reached.items()])
        # an unbounded ratio (no significant gap on these examples) reads as "not above ε"
        return [s if np.isfinite(s) else -1.0 for s in scores]

    def _bounds(self, xa: np.ndarray, mask: np.ndarray, k: int, level: float,
                batch: set[bytes]) -> tuple[float, float]:
        """Bounds of ``r(A)`` from ``xa``, its values on chunks ``0..k``, with the control nearest to
        ``mask`` (flat ``[L·H]``) among the sets seen on more chunks when there is one
        (:func:`kmshc.stats.recovery_bounds_with_control`): with a set one head away read further,
        ``A`` needs few examples of its own to be as sure."""
        control = self.seen.nearest(mask, k, exclude=batch) if self.seen is not None else None
        if control is None:
            xm, xb = self._reference(k)
            return stats.recovery_bounds(xa, xb, xm, level)
        xc, j = control
        xm, xb = self._reference(j)
        return stats.recovery_bounds_with_control(xa, xc, xb, xm, level)


def split_chunks(n: int, looks: int) -> list[slice]:
    """Consecutive slices of ``range(n)`` ending at ``n·2^(k−looks+1)`` for ``k < looks``."""
    ends = sorted({max(1, round(n * 2.0 ** (k - looks + 1))) for k in range(looks)})
    starts = [0] + ends[:-1]
    return [slice(a, b) for a, b in zip(starts, ends) if b > a]
