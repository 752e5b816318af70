"""Rank heads without training, into a ``gates.json`` the warm search starts from (``kmshc rank``,
:mod:`kmshc.entry.rank`).

``log_alpha`` carries the method's scores (the warm search's order for restoring and deleting
heads); ``gate`` is 1 for the starting set and 0 elsewhere: the coverage rule of
:func:`kmshc.rank.attribution.starting_set` for ``attribution`` and ``integrated_gradients``, the
selected heads for ``forward_selection`` (:mod:`kmshc.rank.forward_selection`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from kmshc.rank.attribution import METHODS as DERIVATIVES
from kmshc.rank.attribution import Attribution, head_attribution, starting_set
from kmshc.engine.cost import CostRecord
from kmshc.search.settings import DEFAULTS
from kmshc.search.gates_file import gates_record as record
from kmshc.search.gates_file import load_gates
from kmshc.types import KmshcError, heads_to_mask

METHODS = (*DERIVATIVES, "forward_selection")


@dataclass(frozen=True)
class RankSettings:
    """How ``kmshc rank`` ranks (the defaults of the verb and of :func:`kmshc.api.rank_heads`):
    ``method``; ``steps`` (integrated gradients' points on the gate path); ``coverage`` (the
    starting-set rule of the derivative methods); ``target``, ``per_round``, ``max_heads``
    (forward selection, :func:`kmshc.rank.forward_selection.forward_selection`)."""

    method: str = "attribution"
    steps: int = 5
    coverage: float = 0.9
    target: float = DEFAULTS.epsilon
    per_round: int = 1
    max_heads: int = 64


def rank(scorer, split: str, settings: RankSettings,
         on_round: Callable[[int, float], None] | None = None) -> tuple[Attribution, list[str], dict[str, Any]]:
    """``(scores, starting set, start rule)`` of ``settings.method`` on ``scorer``'s data."""
    if settings.method not in METHODS:
        raise KmshcError(f"method: expected one of {', '.join(METHODS)}, got {settings.method!r}")
    if settings.method == "forward_selection":
        from kmshc.rank.forward_selection import forward_selection
        result = forward_selection(scorer, split, target=settings.target, per_round=settings.per_round,
                                   max_heads=settings.max_heads, on_round=on_round)
        return result, list(result.start), {
            "rule": "forward_selection", "target": settings.target, "per_round": settings.per_round,
            "max_heads": settings.max_heads, "reached": result.reached,
            "recovery": [round(r, 6) for r in result.recovery], "order": list(result.start)}
    result = head_attribution(scorer, split, method=settings.method, steps=settings.steps)
    return result, starting_set(result.named(), settings.coverage), {"rule": "coverage", "coverage": settings.coverage}


def gates_record(exp, result: Attribution, start: list[str] | tuple[str, ...], start_rule: dict[str, Any],
                 wall_time_s: float) -> dict[str, Any]:
    """The ``gates.json`` object (:mod:`kmshc.search.gates_file`) with ``log_alpha`` = the method's
    score and ``gate`` 1 on the starting set, plus the method, its start rule (with the starting
    set's ``size``) and its cost."""
    start = sorted(set(start))
    return record(exp, result.scores.float(), heads_to_mask(start, *result.scores.shape),
                  gate_threshold=DEFAULTS.gate_threshold, method=result.method, steps=result.steps,
                  split=result.split, n=result.n, metric="mean margin", start_rule={**start_rule, "size": len(start)},
                  cost=result.cost.to_dict(), wall_time_s=round(wall_time_s, 3))


@dataclass(frozen=True)
class RankRecord:
    """What a rank run's ``gates.json`` says about its own run: method, examples, starting-set size,
    cost, wall time and ``steps``: the points on the gate path (1 for plain attribution, and where
    a file does not record it) or, for forward selection, the rounds."""

    method: str
    n: int
    start_size: int
    cost: CostRecord
    wall_time_s: float
    steps: int = 1


def read_rank_record(run_dir: str | Path) -> RankRecord:
    """The :class:`RankRecord` of ``run_dir/gates.json``; a training run's gates (no ``method``) are refused."""
    d, path = load_gates(run_dir, "expected the gates.json of a `kmshc rank` run")
    if d.get("method") not in METHODS:
        raise KmshcError(f"{path}: field 'method' must be one of {', '.join(METHODS)} (a `kmshc rank` run)")
    try:
        return RankRecord(method=d["method"], n=int(d["n"]), start_size=int(d["start_rule"]["size"]),
                          cost=CostRecord.from_dict(d["cost"], where=f"{path}: field 'cost'"),
                          wall_time_s=float(d["wall_time_s"]), steps=int(d.get("steps", 1)))
    except (KeyError, TypeError, ValueError) as e:
        raise KmshcError(f"{path}: field {e} missing or malformed") from None
