"""Search drivers: refinement from learned gates (warm), and the cold searches from all heads.

Each driver is a pure function of a :class:`~kmshc.search.state.Recorder` (which wraps the
``evaluate_many`` callable) and returns a frozen :class:`~kmshc.search.common.SearchResult`.
The threshold's ``S(M)`` and ``S(B)`` are evaluations too and are counted.
"""
from __future__ import annotations

import random
from typing import Mapping

import torch

from kmshc.search.common import (NoSufficientSet, SearchResult, allowed_heads, check_bundle_floor, mask_of, names,
                                 threshold_value)
from kmshc.search.macro import macro_layer_search
from kmshc.search.micro import ordered_deletion, removal_loop, restore_loop, single_head_pass
from kmshc.search.settings import DEFAULTS
from kmshc.search.state import BudgetExhausted, Recorder
from kmshc.types import KmshcError


def _threshold(rec: Recorder, shape: tuple[int, int], baseline: set[int], epsilon: float,
               absolute: float | None, margin: float = 0.0) -> tuple[float, float, float]:
    """``(S(M), S(B), U + margin)``: one batch of two evaluations (``B`` = the heads kept on in the
    baseline). ``margin`` raises the bar on the search split only: a set chosen at the edge of U
    on val tends to land below U on test, and the certificate still tests against plain U."""
    everything = set(range(shape[0] * shape[1]))
    full, base = rec.many(torch.stack([mask_of(everything, shape), mask_of(baseline, shape)]))
    U = threshold_value(full, base, epsilon, absolute) + margin
    if not 0 <= margin or U > full:
        raise KmshcError(f"search_margin: expected 0 <= search_margin and U + search_margin <= S(M) = {full:.4f} "
                         f"on the search split, got {margin} (U + search_margin = {U:.4f})")
    return full, base, U


def _result(rec: Recorder, shape, C: set[int], semantics: str, U: float, score, capped: bool, **info) -> SearchResult:
    rec.save(done=not capped)
    info["repeats"] = rec.repeats  # masks asked again and answered from the log (not evaluations)
    return SearchResult(names(C, shape), semantics, U, score, rec.evaluations, round(rec.wall_time_s, 3),
                        tuple(rec.trace), capped, info)


def restore_in_gate_order(rec: Recorder, shape: tuple[int, int], C0: set[int], gates: Mapping[int, float],
                          U: float, rng: random.Random, batch: int = 10) -> tuple[set[int], float]:
    """A prefix ``C0 ∪ top-j heads by gate`` with ``S ≥ U`` whose ``j − 1`` prefix misses ``U``
    (the smallest such prefix when the score grows with ``j``), ``batch`` prefixes per evaluation.

    Exponential then ``batch``-ary search over ``j``: about ``2·log2(j)`` evaluations with
    ``batch=1``, instead of ``j`` one prefix at a time. Why: a backup circuit's search starts
    from the learned set minus the excluded circuit and may need hundreds of heads back; a
    warm start a few heads short still costs only a few evaluations.
    """
    rest = sorted(set(gates) - C0, key=lambda h: (-gates[h], h))
    # Everything allowed first: with every head allowed this is M, already scored (free); with
    # excluded circuits one evaluation saves the whole search when even all of them miss U.
    allowed = C0 | set(rest)
    sc = rec.one(mask_of(allowed, shape))
    if sc < U:
        raise NoSufficientSet(f"the {len(allowed)} allowed heads together score {sc:.4f} < U = {U:.4f}: "
                              "no sufficient set remains among them", score=sc, threshold=U)
    lo, hi, best = 0, len(rest), sc  # invariant: prefix lo misses U (lo = 0: C0, scored by the caller), hi reaches it
    galloping = True
    while hi - lo > 1:
        if galloping:  # the next `batch` powers of two above lo
            sizes = [2 ** i for i in range(hi.bit_length()) if lo < 2 ** i < hi][:batch]
            galloping = bool(sizes)
        if not galloping:  # `batch` points spread evenly inside (lo, hi)
            sizes = sorted({lo + max(1, (hi - lo) * (i + 1) // (batch + 1)) for i in range(batch)} - {hi})
        scores = rec.many(torch.stack([mask_of(C0 | set(rest[:j]), shape) for j in sizes]))
        hit = next((i for i, s in enumerate(scores) if s >= U), None)
        if hit is None:
            lo = sizes[-1]
        else:
            lo, hi, best, galloping = (sizes[hit - 1] if hit else lo), sizes[hit], scores[hit], False
    rec.decision(rng, size=len(C0) + hi, event="restored_in_gate_order", added=hi, score=best)
    return C0 | set(rest[:hi]), best


def by_importance(importance: Mapping[int, float], heads: set[int]) -> list[int]:
    """``heads`` least important first (ties: lower index)."""
    return sorted(heads, key=lambda h: (importance.get(h, 0.0), h))


def importance_weights(importance: Mapping[int, float], heads: set[int]) -> dict[int, float]:
    """Bundle-sampling weights from rank, not value: the least important head gets 1, the most
    important ``1/n``. Ranks, because trained gates saturate (many deterministic gates are
    exactly 1.0, so ``1 − gate`` is 0 for all of them and orders nothing), while ``log_alpha``
    still ranks them."""
    order = by_importance(importance, heads)
    return {h: (len(order) - i) / len(order) for i, h in enumerate(order)}


def refine(rec: Recorder, shape: tuple[int, int], gates: Mapping[int, float], *, epsilon: float = DEFAULTS.epsilon,
           threshold: float | None = DEFAULTS.threshold, gate_threshold: float = DEFAULTS.gate_threshold, N: int = DEFAULTS.N,
           weighted: bool = DEFAULTS.weighted, seed: int = 0, strategy: str = DEFAULTS.strategy,
           importance: Mapping[int, float] | None = None, margin: float = DEFAULTS.search_margin,
           universe: set[int] | None = None, start: str = DEFAULTS.start) -> SearchResult:
    """Warm search (keep semantics) from learned deterministic gates ``{flat index: gate}``.

    ``start="gates"``: ``C0 = {gate > τ}``; ``"prefix"``: ``C0 = ∅``. If ``S(C0) < U``, heads are
    restored in ``importance`` order (so ``"prefix"`` starts from the shortest sufficient prefix
    of the learned order, found in about ``2·log2`` of its length evaluations). Then either
    ``strategy="bundles"``: bundle removal (sampling weighted by importance rank when
    ``weighted``), or ``"ordered"``: :func:`~kmshc.search.micro.ordered_deletion`, least
    important first (``"gallop"``: the same in doubling blocks). All end with the single-head
    pass, so the result is 1-minimal.
    ``importance`` (default: the gates) ranks heads; pass the learned ``log_alpha``.
    ``universe``: the only heads that may be on (the heads outside excluded circuits); the others
    are dropped from the start and stay ablated, while ``U`` still comes from the true ``S(M)``
    and ``S(∅)``. Raises :class:`~kmshc.search.common.NoSufficientSet` when all of them miss ``U``.
    """
    if strategy not in ("bundles", "ordered", "gallop"):
        raise KmshcError(f"strategy: expected 'bundles', 'ordered' or 'gallop', got {strategy!r}")
    if start not in ("gates", "prefix"):
        raise KmshcError(f"start: expected 'gates' or 'prefix', got {start!r}")
    rng = random.Random(seed)
    importance = gates if importance is None else importance
    allowed = allowed_heads(shape, universe)
    C: set[int] = {h for h, g in gates.items() if g > gate_threshold and h in allowed} if start == "gates" else set()
    # a cap of 0-2 evaluations stops inside the threshold batch, before U or any score exists
    score: float | None = None
    U = float("nan")
    try:
        full, base, U = _threshold(rec, shape, set(), epsilon, threshold, margin)
        rec.decision(rng, size=len(C), event="threshold", full=full, baseline=base, U=U, start=len(C))
        score = rec.one(mask_of(C, shape)) if C else base
        if score < U:
            # ordered, gallop: one prefix per evaluation (fewest example forwards); bundles: N per evaluation (fewest rounds)
            ranked = {h: v for h, v in importance.items() if h in allowed}
            C, score = restore_in_gate_order(rec, shape, C, ranked, U, rng, batch=N if strategy == "bundles" else 1)
        weights = importance_weights(importance, C) if weighted else None
        if strategy in ("ordered", "gallop"):
            C, score = ordered_deletion(rec, shape, C, U, rng, by_importance(importance, C), score=score,
                                        gallop=strategy == "gallop")
        else:
            C, score = removal_loop(rec, shape, C, U, rng, N=N, weights=weights, score=score)
        C, score, last = single_head_pass(rec, shape, C, U, rng, priority=weights, score=score)
    except BudgetExhausted as stop:
        C, score = (stop.C, stop.score) if stop.C is not None else (C, score)
        return _result(rec, shape, C, "keep", U, score, True)
    return _result(rec, shape, C, "keep", U, score, False, full=full, baseline=base, strategy=strategy,
                   removals={names([h], shape)[0]: s for h, s in last.items()})


def cold_search(rec: Recorder, shape: tuple[int, int], *, semantics: str = DEFAULTS.semantics,
                epsilon: float = DEFAULTS.epsilon, threshold: float | None = DEFAULTS.threshold, N: int = DEFAULTS.N,
                K: int = DEFAULTS.K, seed: int = 0, macro: bool | None = DEFAULTS.macro,
                window: int | None = DEFAULTS.window, window_fraction: float = DEFAULTS.window_fraction,
                percentile: float = DEFAULTS.percentile, edge_correction: bool = DEFAULTS.edge_correction,
                baseline: str = DEFAULTS.baseline, ceil: bool = DEFAULTS.ceil,
                halve_when_large: bool = DEFAULTS.halve_when_large, macro_using: str = "",
                margin: float = DEFAULTS.search_margin, universe: set[int] | None = None) -> SearchResult:
    """The paper's search from all heads: optional macro layer search, then the micro search.

    ``semantics="keep"`` uses the same removal loop as :func:`refine` (like-for-like with warm);
    ``"paper"`` uses the restore loop. ``baseline="complement"`` is the released code's
    ``B = M \\ C₀`` (macro candidates ablated); ``"empty"`` is ``B = ∅``. ``macro_using`` names the
    recorder's scorer for the macro stage (the ``paper`` preset's probe with D = 10). ``universe``
    (keep semantics only): the heads that may be on, as in :func:`refine`.
    """
    if semantics not in ("keep", "paper"):
        raise KmshcError(f"semantics: expected 'keep' or 'paper', got {semantics!r}")
    if baseline not in ("empty", "complement"):
        raise KmshcError(f"baseline: expected 'empty' or 'complement', got {baseline!r}")
    everything = set(range(shape[0] * shape[1]))
    allowed = allowed_heads(shape, universe)
    if semantics == "paper" and allowed != everything:
        raise KmshcError("exclude: paper semantics keeps every head outside C active, so excluded heads cannot stay "
                         "ablated; search for backup circuits with keep semantics")
    rng = random.Random(seed)
    C, score, U, info = set(allowed), None, float("nan"), {}
    try:
        if macro if macro is not None else semantics == "paper":
            m = macro_layer_search(rec, shape, window=window, fraction=window_fraction, percentile=percentile,
                                   edge_correction=edge_correction, rng=rng, using=macro_using, universe=allowed)
            C = {l * shape[1] + h for l in m.layers for h in range(shape[1])} & allowed
            info["macro"] = {"window": m.window, "drops": m.drops, "drops_corrected": m.drops_corrected,
                             "layers_paper": m.layers_paper, "layers_corrected": m.layers_corrected,
                             "used": "corrected" if edge_correction else "paper", "evaluations": m.evaluations}
        check_bundle_floor(K, len(C))
        B = everything - C if baseline == "complement" else set()
        full, base, U = _threshold(rec, shape, B, epsilon, threshold, margin)
        info.update(full=full, baseline=base)
        rec.decision(rng, size=len(C), event="threshold", full=full, baseline=base, U=U, start=len(C))
        if semantics == "paper":
            C, score = restore_loop(rec, shape, C, U, rng, N=N, K=K, ceil=ceil, halve_when_large=halve_when_large)
        else:
            if len(C) < len(everything):
                score = rec.one(mask_of(C, shape))
                if score < U:
                    what = "macro candidate set" if "macro" in info else "set of allowed heads"
                    hint = ("run without the macro stage (macro: false)" if "macro" in info else
                            "no sufficient set remains outside the excluded circuits")
                    raise NoSufficientSet(f"keep semantics: the {what} ({len(C)} heads) scores {score:.4f}, "
                                          f"below U = {U:.4f}; {hint}", score=score, threshold=U)
            C, score = removal_loop(rec, shape, C, U, rng, N=N, score=score)
            C, score, last = single_head_pass(rec, shape, C, U, rng, score=score)
            info["removals"] = {names([h], shape)[0]: s for h, s in last.items()}
    except BudgetExhausted as stop:
        C, score = (stop.C, stop.score) if stop.C is not None else (C, score)
        return _result(rec, shape, C, semantics, U, score, True, **info)
    return _result(rec, shape, C, semantics, U, score, False, **info)
