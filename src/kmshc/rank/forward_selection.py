"""Forward selection by re-linearised attribution: a small starting circuit without training.

Attribution at the full model (:mod:`kmshc.rank.attribution`) is a linear estimate around *all heads
on*; a small circuit lives around *almost all heads ablated*, where heads interact differently
(on IOI, a head the full-model estimate ranks 177th of 270 is one of the circuit's four). So the
estimate is taken again at the circuit being built:

    S ← ∅;  repeat:  (∂m/∂g, m) at the gates of S  (g_h = 1 for h ∈ S, 0 elsewhere);
                     stop when r(S) = (m(S) − m(∅)) / (m(M) − m(∅)) ≥ target;
                     add the ``per_round`` heads outside S with the largest ∂m/∂g_h.

``∂m/∂g_h`` for a head outside ``S`` is the first-order gain of switching it on *next to S*. Each
round is one forward and one backward pass over the ranking split (train by default), whose
forward also gives ``m(S)``: the stopping rule is free apart from one forward pass for ``m(M)``.
The result is a start for the warm search, which checks it on val, restores heads in the order
of the last round's derivative when it falls short, and deletes what is not needed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from kmshc.rank.attribution import Attribution, gate_gradients
from kmshc.engine.cost import RowCount
from kmshc.engine.hooks import count_rows
from kmshc.engine.scoring import Scorer
from kmshc.search.settings import DEFAULTS
from kmshc.types import KmshcError, head_name


@dataclass(frozen=True)
class Selection(Attribution):
    """:class:`~kmshc.rank.attribution.Attribution` whose ``scores`` ``[L, H]`` are ``∂m/∂g`` at the
    selected set; ``start``: the heads in the order added; ``recovery``: ``r(S)`` on the ranking
    split before each addition and at the end (``recovery[0]`` = 0, the empty set); ``reached``:
    whether the last ``r(S)`` reached the target (otherwise ``max_heads`` stopped it)."""

    start: tuple[str, ...] = ()
    recovery: tuple[float, ...] = ()
    reached: bool = False


def forward_selection(scorer: Scorer, split: str = "train", *, target: float = DEFAULTS.epsilon, per_round: int = 1,
                      max_heads: int = 64, on_round: Callable[[int, float], None] | None = None) -> Selection:
    """Grow ``S`` from ∅ by re-linearised attribution until ``r(S) ≥ target`` on ``scorer``'s data
    (named ``split`` in the result), or until it holds ``max_heads`` heads. See the module docstring.
    ``on_round(size, recovery)`` is called after each round (progress for long runs).

    Raises :class:`~kmshc.types.KmshcError` when the full model's margin does not exceed the
    all-ablated one on this split (no gap: recovery is undefined).
    """
    if per_round < 1 or max_heads < 1:
        raise KmshcError(f"per_round and max_heads: expected at least 1, got {per_round} and {max_heads}")
    n_layers, n_heads = scorer.shape
    cost = RowCount(n_layers, scorer.data.rows_per_example)
    with count_rows(scorer.model, cost):  # m(M): the scorer's own forward pass, counted here too
        full = float(scorer.outcomes(torch.ones(n_layers, n_heads)).margin.double().mean())
    S = torch.zeros(n_layers, n_heads)
    order: list[str] = []
    recovery: list[float] = []
    base = None
    cap = min(max_heads, n_layers * n_heads)
    while True:
        grads, margins = gate_gradients(scorer, S[None], cost)
        grad, m = grads[0], float(margins[0])
        if base is None:  # the first round is at the empty set: m(∅)
            base = m
            if not full > base:
                raise KmshcError(f"forward selection on the {split} split: the full model's mean margin {full:.4f} "
                                 f"does not exceed the all-ablated one {base:.4f}; no gap to recover")
        recovery.append((m - base) / (full - base))
        if on_round is not None:
            on_round(len(order), recovery[-1])
        if (order and recovery[-1] >= target) or len(order) >= cap:
            break
        take = min(per_round, cap - len(order))
        for i in grad.masked_fill(S.bool(), float("-inf")).flatten().topk(take).indices.tolist():
            S[i // n_heads, i % n_heads] = 1.0
            order.append(head_name(i // n_heads, i % n_heads))
    return Selection(grad, scorer.data.n, split, cost, "forward_selection", len(recovery), start=tuple(order),
                     recovery=tuple(recovery), reached=recovery[-1] >= target)
