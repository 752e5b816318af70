"""Micro head search (the search's step 2, after the macro layer search) in both semantics, keep and paper.

* ``paper`` semantics (:func:`restore_loop`): heads in ``C`` are ablated except a restored
  bundle ``C'``; a bundle passes when ``S((M \\ C) ∪ C') ≥ U``. Each round scores ``N``
  k-bundles; the *worst* failing bundle is removed from ``C`` (its heads stay active from then
  on) and the round repeats at the same ``k``; when all pass, ``k ← max(K, ⌊k/2⌋)``; the search
  stops when ``k = K`` and all ``N`` bundles pass.
* ``keep`` semantics (:func:`removal_loop`): only ``C`` is active. Each round scores ``N``
  candidate removals ``S(C \\ Θ)``; the *best* one is removed if it still reaches ``U`` (same
  ``k``), else ``k`` halves. At ``k = 1`` :func:`single_head_pass` finishes the job, so the
  result is 1-minimal on the search split by construction.
* ``keep`` semantics, warm (:func:`ordered_deletion`): the deletion filter. Heads are tried
  one at a time, least important first (e.g. lowest learned ``log_alpha``); each is dropped
  if ``S(C \\ {h}) ≥ U``. One evaluation per starting head; when ``S`` is monotone in ``C``
  the result is already 1-minimal, and :func:`single_head_pass` confirms it in one batch.
  ``gallop=True`` tries runs of heads as blocks that double while they can be dropped.

Every function takes a :class:`~kmshc.search.state.Recorder` (counting, logging, resume) and a
``random.Random``; sets of heads are flat indices (see :mod:`kmshc.search.common`).
"""
from __future__ import annotations

import math
import random
from typing import Mapping

import torch

from kmshc.search.common import check_bundle_floor, draw_bundles, mask_of
from kmshc.search.settings import DEFAULTS
from kmshc.search.state import BudgetExhausted, Recorder


def _halve(k: int, floor: int, ceil: bool) -> int:
    return max(floor, math.ceil(k / 2) if ceil else k // 2)


def restore_loop(rec: Recorder, shape: tuple[int, int], candidates: set[int], U: float, rng: random.Random,
                 N: int = DEFAULTS.N, K: int = DEFAULTS.K, ceil: bool = DEFAULTS.ceil,
                 halve_when_large: bool = DEFAULTS.halve_when_large) -> tuple[set[int], float]:
    """The paper's loop; returns ``(C, worst restore score of the last round)``.

    ``ceil``/``halve_when_large`` are the released code's variants (``paper`` preset): k halves
    with a ceiling, and a round that removes a bundle while ``k > 0.9·|C|`` also halves k.
    """
    everything = set(range(shape[0] * shape[1]))
    C = set(candidates)
    check_bundle_floor(K, len(C))
    k = max(K, len(C) // 2)
    worst = float("nan")
    try:
        while len(C) > K:
            k = min(k, len(C))
            bundles = draw_bundles(rng, sorted(C), k, N)
            scores = rec.many(torch.stack([mask_of((everything - C) | set(b), shape) for b in bundles]))
            i = min(range(len(scores)), key=lambda j: (scores[j], j))
            worst = scores[i]
            if worst < U:
                large = k > 0.9 * len(C)
                C -= set(bundles[i])
                if halve_when_large and large:
                    k = _halve(k, K, ceil)
                rec.decision(rng, size=len(C), event="remove_failing_bundle", k=k, bundle=list(bundles[i]), score=worst)
                continue
            if k == K:
                rec.decision(rng, size=len(C), event="all_pass", k=k, worst=worst)
                break
            k = _halve(k, K, ceil)
            rec.decision(rng, size=len(C), event="halve", k=k, worst=worst)
    except BudgetExhausted as stop:
        raise stop.at(C, worst)  # the caller reports where the search stopped
    return C, worst


def removal_loop(rec: Recorder, shape: tuple[int, int], start: set[int], U: float, rng: random.Random,
                 N: int = DEFAULTS.N, weights: Mapping[int, float] | None = None, score: float | None = None,
                 k: int | None = None) -> tuple[set[int], float | None]:
    """Bundle-halving removal in keep semantics, down to k = 2; returns ``(C, S(C) if known)``.

    ``weights`` (e.g. ``1 − gate``) make heads with large weight likelier to be tried first.
    """
    C = set(start)
    k = len(C) // 2 if k is None else k
    try:
        while k >= 2 and len(C) > 1:
            k = min(k, len(C) - 1)
            bundles = draw_bundles(rng, sorted(C), k, N, weights)
            scores = rec.many(torch.stack([mask_of(C - set(b), shape) for b in bundles]))
            i = max(range(len(scores)), key=lambda j: (scores[j], -j))
            if scores[i] >= U:
                C -= set(bundles[i])
                score = scores[i]
                rec.decision(rng, size=len(C), event="remove_bundle", k=k, bundle=list(bundles[i]), score=scores[i])
            else:
                k //= 2
                rec.decision(rng, size=len(C), event="halve", k=k, best=scores[i])
    except BudgetExhausted as stop:
        raise stop.at(C, score)  # the caller reports where the search stopped
    return C, score


def single_head_pass(rec: Recorder, shape: tuple[int, int], start: set[int], U: float, rng: random.Random,
                     priority: Mapping[int, float] | None = None, score: float | None = None,
                     ) -> tuple[set[int], float | None, dict[int, float]]:
    """Single-head removal until no head can go: 1-minimal by construction.

    A full pass scores ``S(C \\ {h})`` for every ``h ∈ C`` in one batch. When several heads
    pass, they are first tried as one block, ``S(C \\ passing)``: one evaluation that, when it
    reaches ``U``, removes them all. Otherwise the best passing head is removed (ties: larger
    ``priority``, e.g. ``1 − gate``, then lower index); then only the heads that passed last time
    are re-scored (a head that failed on a larger set rarely passes on a smaller one). When none
    of them passes, a confirming full pass runs; the search ends only after a full pass in whose
    every removal fails, and returns its scores ``{h: S(C \\ {h})}``.

    Why the block: after a deletion filter, the heads that pass here are mostly ones whose removal
    *raises* ``S`` (kept early, removable once other heads went). One at a time they cost
    ``p + (p−1) + … + 1`` evaluations for ``p`` passing heads; as a block, one. A failed block
    costs one evaluation and is tried at most once per full pass.
    """
    C = set(start)
    priority = priority or {}
    last: dict[int, float] = {}
    todo = sorted(C)  # heads to score in this pass; a full pass when it equals C
    try:
        while C:
            full_pass = len(todo) == len(C)
            scores = rec.many(torch.stack([mask_of(C - {h}, shape) for h in todo]))
            now = dict(zip(todo, scores))
            passing = [h for h in todo if now[h] >= U]
            if full_pass:
                last = now
            if full_pass and 1 < len(passing) < len(C):
                s = rec.one(mask_of(C - set(passing), shape))
                if s >= U:
                    C -= set(passing)
                    score, todo = s, sorted(C)
                    rec.decision(rng, size=len(C), event="remove_block", heads=sorted(passing), score=s)
                    continue
            if not passing:
                if full_pass:
                    rec.decision(rng, size=len(C), event="one_minimal", worst_removal=max(scores))
                    break
                todo = sorted(C)
                rec.decision(rng, size=len(C), event="confirm_pass")
                continue
            h = max(passing, key=lambda x: (now[x], priority.get(x, 0.0), -x))
            C.discard(h)
            score = now[h]
            todo = sorted(set(passing) - {h}) or sorted(C)
            rec.decision(rng, size=len(C), event="remove_head", head=h, score=now[h])
    except BudgetExhausted as stop:
        raise stop.at(C, score)  # the caller reports where the search stopped
    return C, score, last


def ordered_deletion(rec: Recorder, shape: tuple[int, int], start: set[int], U: float, rng: random.Random,
                     order: list[int], score: float | None = None, *,
                     gallop: bool = False) -> tuple[set[int], float | None]:
    """Try to drop each head of ``order`` (least important first) once; returns ``(C, S(C) if known)``.

    One mask per evaluation, in sequence, because each decision changes the next mask. A head
    kept here was necessary for a superset of the final ``C``; when removing heads never
    raises ``S``, it stays necessary, so the final single-head pass usually removes nothing
    and costs ``|C|`` evaluations in one batch.

    ``gallop``: try the next ``k`` heads of ``order`` as one block, doubling ``k`` after a block
    is dropped and halving it after one fails (a failed block of several heads decides nothing:
    its heads are tried again in smaller blocks, down to the one-head decision above). Why: a
    start restored up to the bar holds many heads whose removals are all close calls, each of
    which reads the whole split; runs of unneeded heads then go in a few evaluations.
    """
    C = set(start)
    todo = [h for h in order if h in C]
    i, k = 0, 1
    try:
        while i < len(todo):
            block = todo[i:i + k][:len(C) - 1]  # never the last head
            if not block:
                break
            s = rec.one(mask_of(C - set(block), shape))
            if s >= U:
                C -= set(block)
                score, i = s, i + len(block)
                if len(block) == 1:
                    rec.decision(rng, size=len(C), event="drop_head", head=block[0], score=s)
                else:
                    rec.decision(rng, size=len(C), event="drop_block", heads=block, score=s)
                k = 2 * k if gallop else 1
            elif len(block) > 1:
                k = len(block) // 2
            else:
                rec.decision(rng, size=len(C), event="keep_head", head=block[0], score=s)
                i += 1
    except BudgetExhausted as stop:
        raise stop.at(C, score)  # the caller reports where the search stopped
    return C, score
