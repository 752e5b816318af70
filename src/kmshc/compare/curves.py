"""Faithfulness curves over a head ranking, and their areas CPR and CMD (MIB-style).

Given a ranking of heads (most important first), the circuit ``C_k`` is its top ``k`` heads.
Its normalised faithfulness is ``f(k) = (S(C_k) − S(∅)) / (S(M) − S(∅))``, so ``f(0) = 0``
and ``f(N) = 1`` for ``N`` heads. Over the fraction of heads ``x = k / N``, trapezoidal areas:

* **CPR** (circuit performance ratio) ``= ∫₀¹ f(x) dx``: higher is better;
* **CMD** (circuit–model distance) ``= ∫₀¹ |1 − f(x)| dx``: lower is better.

Both come from MIB (Mueller et al. 2025, "MIB: A Mechanistic Interpretability Benchmark"),
which compares circuit-discovery methods by these areas rather than at one circuit size.
MIB's grid starts at 0.1% of edges; ours, over heads, starts at ``k = 0`` (where ``f = 0``).

Rankings come from a train run's ``gates.json`` (``log_alpha``, highest first), from a
searched circuit's head order, or from any list of head names (:func:`ranking_from_gates`,
:func:`complete_ranking`; :func:`random_ranking` is the seeded baseline). Everything here is pure
except :func:`faithfulness_curve` and :func:`topk_curve` (on explicit sizes, :func:`sizes`), which
call the given score function once, on all grid masks stacked. Rankings scored on an experiment:
:mod:`kmshc.compare.experiment_curves`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import torch

from kmshc.types import KmshcError, head_name, heads_to_mask, parse_head

# Fractions of all heads at which the top-k circuit is scored (rounded to whole heads).
DEFAULT_FRACTIONS = (0.0, 0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0)


@dataclass(frozen=True)
class Curve:
    """One ranking's curve: ``ks`` circuit sizes, raw ``scores`` S(C_k), ``faithfulness`` f(k)."""

    label: str
    n_heads: int
    ks: tuple[int, ...]
    scores: tuple[float, ...]
    faithfulness: tuple[float, ...]
    cpr: float
    cmd: float

    def to_dict(self) -> dict:
        return {"label": self.label, "n_heads": self.n_heads, "ks": list(self.ks), "scores": list(self.scores),
                "faithfulness": list(self.faithfulness), "cpr": self.cpr, "cmd": self.cmd}


def grid(n_heads: int, fractions: Sequence[float] = DEFAULT_FRACTIONS) -> list[int]:
    """Sorted distinct circuit sizes ``round(f·N)`` for ``fractions``, always with 0 and ``N``."""
    if n_heads <= 0:
        raise KmshcError(f"a faithfulness curve needs at least one head, got {n_heads}")
    if any(not 0 <= f <= 1 for f in fractions):
        raise KmshcError(f"curve fractions must lie in [0, 1], got {list(fractions)}")
    return sorted({0, n_heads, *(int(round(f * n_heads)) for f in fractions)})


def topk_masks(ranking: Sequence[str], ks: Sequence[int], n_layers: int, n_heads: int) -> torch.Tensor:
    """``[len(ks), L, H]`` masks; mask ``i`` keeps the first ``ks[i]`` heads of ``ranking``."""
    if max(ks, default=0) > len(ranking):
        raise KmshcError(f"the ranking names {len(ranking)} heads but the grid needs {max(ks)}")
    return torch.stack([heads_to_mask(ranking[:k], n_layers, n_heads) for k in ks])


def normalise(scores: Sequence[float], full: float, empty: float) -> list[float]:
    """``(s − S(∅)) / (S(M) − S(∅))`` per score; no gap between full and empty is an error."""
    gap = full - empty
    if abs(gap) < 1e-12:
        raise KmshcError(f"S(M) = {full:.4f} equals S(∅) = {empty:.4f}: there is no gap to normalise by; "
                         "faithfulness curves need a task the ablation hurts")
    return [(s - empty) / gap for s in scores]


def _trapezoid(x: Sequence[float], y: Sequence[float]) -> float:
    if len(x) != len(y) or len(x) < 2:
        raise KmshcError(f"an area needs at least two points with matching x and y, got {len(x)} and {len(y)}")
    if any(b < a for a, b in zip(x, x[1:])):
        raise KmshcError(f"curve x values must be non-decreasing, got {list(x)}")
    return float(torch.trapezoid(torch.tensor(y, dtype=torch.float64), torch.tensor(x, dtype=torch.float64)))


def cpr(fractions: Sequence[float], faith: Sequence[float]) -> float:
    """Area under the normalised curve, ``∫ f dx`` (trapezoids over ``fractions`` of heads)."""
    return _trapezoid(fractions, faith)


def cmd(fractions: Sequence[float], faith: Sequence[float]) -> float:
    """Area between the curve and 1, ``∫ |1 − f| dx`` (trapezoids, as MIB computes it)."""
    return _trapezoid(fractions, [abs(1.0 - f) for f in faith])


def curve_from_scores(label: str, n_heads: int, ks: Sequence[int], scores: Sequence[float],
                      full: float, empty: float) -> Curve:
    """Normalise ``scores`` (S at each ``ks``) and integrate over ``k / n_heads``."""
    faith = normalise(scores, full, empty)
    x = [k / n_heads for k in ks]
    return Curve(label, n_heads, tuple(ks), tuple(float(s) for s in scores), tuple(faith), cpr(x, faith), cmd(x, faith))


def faithfulness_curve(ranking: Sequence[str], score: Callable[[torch.Tensor], torch.Tensor], n_layers: int,
                       n_heads: int, *, label: str = "", fractions: Sequence[float] = DEFAULT_FRACTIONS) -> Curve:
    """Score the top-k circuits of a complete ``ranking`` in one call of ``score`` (``[M, L, H]`` -> ``[M]``).

    The grid always holds ``k = 0`` (S(∅)) and ``k = N`` (S(M)), which normalise the rest.
    """
    return topk_curve(ranking, score, grid(n_layers * n_heads, fractions), n_layers, n_heads, label=label)


def sizes(n_heads: int, spec: Sequence[int | float] | None = None) -> list[int]:
    """Circuit sizes for a curve: in ``spec``, an ``int`` is a number of heads (capped at ``n_heads``)
    and a ``float`` a fraction of them (rounded); sorted, distinct, always with 0 and ``n_heads``.
    ``None``: the default grid (:data:`DEFAULT_FRACTIONS`)."""
    if spec is None:
        return grid(n_heads)
    if n_heads <= 0:
        raise KmshcError(f"a faithfulness curve needs at least one head, got {n_heads}")
    out = {0, n_heads}
    for s in spec:
        if isinstance(s, bool) or not isinstance(s, (int, float)):
            raise KmshcError(f"curve sizes: expected head counts (int) or fractions (float), got {s!r}")
        if isinstance(s, int):
            if s < 0:
                raise KmshcError(f"curve sizes: a head count must be at least 0, got {s}")
            out.add(min(s, n_heads))
        elif not 0 <= s <= 1:
            raise KmshcError(f"curve sizes: a fraction of the heads must lie in [0, 1], got {s}")
        else:
            out.add(int(round(s * n_heads)))
    return sorted(out)


def topk_curve(ranking: Sequence[str], score: Callable[[torch.Tensor], torch.Tensor], ks: Sequence[int],
               n_layers: int, n_heads: int, *, label: str = "",
               endpoints: tuple[float, float] | None = None) -> Curve:
    """The curve of a complete ``ranking`` at the sizes ``ks`` (which must hold 0 and ``N``), its
    top-k masks scored in one call of ``score`` (``[M, L, H]`` -> ``[M]``).

    ``endpoints``: ``(S(M), S(∅))`` when already known, e.g. shared by every ranking scored on the
    same data; the masks of ``k = N`` and ``k = 0`` are then not scored again.
    """
    n = n_layers * n_heads
    ks = sorted(set(ks))
    if not ks or ks[0] != 0 or ks[-1] != n:
        raise KmshcError(f"curve sizes must include 0 and all {n} heads, got {ks}")
    todo = ks if endpoints is None else ks[1:-1]
    values = [float(v) for v in score(topk_masks(ranking, todo, n_layers, n_heads))] if todo else []
    if endpoints is None:
        full, empty = values[-1], values[0]
    else:
        full, empty = (float(x) for x in endpoints)
        values = [empty, *values, full]
    return curve_from_scores(label, n, ks, values, full=full, empty=empty)


def mean_curve(curves: Sequence[Curve], label: str) -> Curve:
    """The pointwise mean of ``curves`` over the same sizes (one ranking at several seeds); its
    ``cpr`` and ``cmd`` are the means of theirs, the numbers a table over seeds reports."""
    if not curves or any(c.ks != curves[0].ks or c.n_heads != curves[0].n_heads for c in curves):
        raise KmshcError("mean_curve: expected one or more curves over the same sizes")
    def avg(rows) -> tuple[float, ...]:
        return tuple(sum(col) / len(curves) for col in zip(*rows))
    return Curve(label, curves[0].n_heads, curves[0].ks, avg(c.scores for c in curves),
                 avg(c.faithfulness for c in curves), sum(c.cpr for c in curves) / len(curves),
                 sum(c.cmd for c in curves) / len(curves))


def random_ranking(n_layers: int, n_heads: int, seed: int) -> list[str]:
    """Every head in a seeded random order: the baseline a ranking must beat."""
    import random
    heads = [head_name(l, h) for l in range(n_layers) for h in range(n_heads)]
    random.Random(seed).shuffle(heads)
    return heads


def complete_ranking(first: Sequence[str], n_layers: int, n_heads: int,
                     rest_order: Mapping[str, float] | None = None) -> list[str]:
    """``first`` (validated, duplicates dropped), then every other head.

    The others follow ``rest_order`` (highest first) where given, else layer-major order, so that
    a searched circuit (a set) still yields a full curve: its heads first, then the rest.
    """
    seen: dict[str, None] = {}
    for name in first:
        parse_head(name, n_layers, n_heads)
        seen.setdefault(name)
    others = [head_name(l, h) for l in range(n_layers) for h in range(n_heads) if head_name(l, h) not in seen]
    if rest_order is not None:
        others.sort(key=lambda h: -rest_order.get(h, float("-inf")))  # stable: ties keep layer order
    return [*seen, *others]


def ranking_from_gates(log_alpha: Mapping[str, float], n_layers: int, n_heads: int) -> list[str]:
    """All heads by ``log_alpha`` (a train run's ``gates.json``), highest first; ties in layer order."""
    return complete_ranking([], n_layers, n_heads, rest_order=log_alpha)
