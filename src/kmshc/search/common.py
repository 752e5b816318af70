"""Pieces shared by every search: head indexing, masks, the threshold, bundles, results.

Heads are flat indices ``i = layer·H + head`` inside the searches (cheap sets and sorting);
they become ``L{l}H{h}`` names only in results.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any, Iterable, Mapping, Sequence

import torch

from kmshc.types import KmshcError, head_name, parse_head


def names(idx: Iterable[int], shape: tuple[int, int]) -> tuple[str, ...]:
    """Flat indices -> sorted ``L{l}H{h}`` names."""
    return tuple(head_name(i // shape[1], i % shape[1]) for i in sorted(idx))


def indices(heads: Iterable[str], shape: tuple[int, int], where: str = "heads") -> list[int]:
    """``L{l}H{h}`` names -> sorted flat indices, checking the range against ``shape``."""
    parsed = [parse_head(n, *shape, where=where) for n in heads]
    return sorted({h.layer * shape[1] + h.head for h in parsed})


def mask_of(active: Iterable[int], shape: tuple[int, int]) -> torch.Tensor:
    """0/1 mask ``[L, H]`` with the ``active`` heads on."""
    m = torch.zeros(shape[0] * shape[1])
    m[list(active)] = 1.0
    return m.view(shape)


def threshold_value(full: float, baseline: float, epsilon: float, absolute: float | None = None,
                    where: str = "search split") -> float:
    """``U_ε = S(B) + ε·(S(M) − S(B))``, or ``absolute``; errors when unreachable."""
    if not 0 < epsilon <= 1:
        raise KmshcError(f"epsilon: expected a value in (0, 1], got {epsilon}")
    if absolute is not None:
        if full < absolute:
            raise KmshcError(f"threshold {absolute} cannot be reached: the full model scores {full:.4f} on the "
                             f"{where}; lower the threshold or use a relative one (epsilon)")
        return float(absolute)
    if full <= baseline:
        raise KmshcError(f"the full model scores {full:.4f} on the {where}, not above the baseline's "
                         f"{baseline:.4f}: there is no gap for a circuit to recover (check the task or ablation)")
    return float(baseline + epsilon * (full - baseline))


class NoSufficientSet(KmshcError):
    """All the heads a search may use, together, stay below ``U``: when ``S`` is monotone no subset
    of them can reach it. ``score``: ``S`` of all of them on the search split; ``threshold``: ``U``."""

    def __init__(self, message: str, *, score: float, threshold: float) -> None:
        super().__init__(message)
        self.score, self.threshold = score, threshold


def allowed_heads(shape: tuple[int, int], universe: Iterable[int] | None = None) -> set[int]:
    """The flat heads a search may use: ``universe`` (heads outside excluded circuits), or all."""
    everything = set(range(shape[0] * shape[1]))
    return everything if universe is None else set(universe) & everything


def check_bundle_floor(K: int, size: int) -> None:
    if K < 1 or K > size:
        raise KmshcError(f"K: the bundle floor must be between 1 and |C| = {size}, got {K}")


def draw_bundles(rng: random.Random, pool: Sequence[int], k: int, n: int,
                 weights: Mapping[int, float] | None = None) -> list[tuple[int, ...]]:
    """``n`` distinct ``k``-subsets of ``pool`` (all of them, in order, when there are at most ``n``).

    With ``weights``, each bundle is a weighted sample without replacement (Efraimidis–Spirakis:
    the ``k`` largest keys ``u^(1/w)``), so heads with large weight are drawn first.
    """
    pool = sorted(pool)
    k = max(0, min(k, len(pool)))
    if math.comb(len(pool), k) <= n:
        return [tuple(c) for c in combinations(pool, k)]
    out: list[tuple[int, ...]] = []
    seen: set[tuple[int, ...]] = set()
    for _ in range(50 * n):
        if weights is None:
            b = tuple(sorted(rng.sample(pool, k)))
        else:
            keys = sorted(pool, key=lambda h: -rng.random() ** (1.0 / max(weights[h], 1e-6)))
            b = tuple(sorted(keys[:k]))
        if b not in seen:
            seen.add(b)
            out.append(b)
            if len(out) == n:
                break
    return out


@dataclass(frozen=True)
class SearchResult:
    """What a search returns. ``heads``: sorted names; ``score``: ``S(C)`` on the search split
    (keep semantics) or the worst restore score seen last (paper semantics); ``trace``: decisions."""

    heads: tuple[str, ...]
    semantics: str
    threshold: float
    score: float | None
    evaluations: int
    wall_time_s: float
    trace: tuple[dict, ...] = ()
    capped: bool = False
    info: Mapping[str, Any] = field(default_factory=dict)
