"""Attribution ranking: every head's first-order effect on the task metric, without training.

For head ``h`` with output ``z_h`` (its slice of the attention output projection's input) and
ablation value ``a_h``, the metric ``m`` (the mean margin: log p(good) − log p(bad) for pairs,
the gold label logit minus the best other for labels) changes, to first order, by

    A(h) = m(all heads) − m(h ablated) ≈ Σ_positions (z_h − a_h) · ∂m/∂z_h.

This is exactly ``∂m/∂g_h`` at ``g = 1`` for the gate of :func:`kmshc.engine.hooks.gated`
(``out = a + g·(z − a)``), so one forward and one backward pass per batch, with every gate held
at 1, gives all heads at once: attribution patching (Nanda, 2023), i.e. EAP (Syed et al., 2023)
on nodes. ``A(h) > 0``: the head helps the task; ``A(h) < 0``: ablating it helps.

``method="integrated_gradients"`` averages the same derivative over ``steps`` points of the path
on which every gate goes from 0 (all heads ablated) to 1 together, ``g = (k − ½)/steps``:
integrated gradients (Sundararajan et al., 2017) on the gates, as in EAP-IG (Hanna et al., 2024).
The scores then add up to ``m(all heads) − m(no head)`` (up to the midpoint rule's error).
``steps`` times the cost of plain attribution. The path still moves every gate together, so a
head that matters only next to a few others can stay low here too; see
:mod:`kmshc.rank.forward_selection`.

``kmshc rank`` (:mod:`kmshc.rank.run`) writes these scores as a ``gates.json`` that
``search.py --mode warm`` starts from; :mod:`kmshc.rank.forward_selection` re-takes the derivative at
a growing circuit instead of at the full model.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from kmshc.engine.cost import RowCount
from kmshc.engine.hooks import count_rows
from kmshc.engine.scoring import Scorer
from kmshc.types import KmshcError, head_name

METHODS = ("attribution", "integrated_gradients")  # the derivative methods of this module


@dataclass(frozen=True)
class Attribution:
    """``scores`` ``[L, H]`` (float64): ``A(h)`` averaged over the ``n`` examples of ``split``;
    ``cost``: the rows the forward and backward passes ran (:mod:`kmshc.engine.cost`); ``method`` and
    ``steps``: how (``steps`` points on the gate path; 1 for plain attribution)."""

    scores: torch.Tensor
    n: int
    split: str
    cost: RowCount
    method: str = "attribution"
    steps: int = 1

    def named(self) -> dict[str, float]:
        """``{"L{l}H{h}": A(h)}`` in layer-major order."""
        return {head_name(l, h): float(self.scores[l, h])
                for l in range(self.scores.shape[0]) for h in range(self.scores.shape[1])}


def gate_path(method: str, steps: int) -> torch.Tensor:
    """The gate values ``[P]`` at which the derivative is taken: ``[1]`` for plain attribution,
    the ``steps`` midpoints ``(k − ½)/steps`` of ``[0, 1]`` for integrated gradients."""
    if method not in METHODS:
        raise KmshcError(f"method: expected one of {', '.join(METHODS)}, got {method!r}")
    if method == "attribution":
        return torch.ones(1)
    if steps < 1:
        raise KmshcError(f"steps: expected at least 1 point on the integration path, got {steps}")
    return (torch.arange(steps, dtype=torch.float32) + 0.5) / steps


def gate_gradients(scorer: Scorer, points: torch.Tensor, cost: RowCount) -> tuple[torch.Tensor, torch.Tensor]:
    """``(∂m/∂g [P, L, H], m [P])``, float64 on the CPU: the mean margin ``m`` over ``scorer``'s
    examples and its derivative along every head's gate, at each of the gate settings ``points``
    ``[P, L, H]`` (the gate mixes ``a + g·(z − a)``). One forward and one backward pass per batch,
    the points of a batch stacked as masks are; the rows run are added to ``cost``."""
    grads = torch.zeros(points.shape, dtype=torch.float64)
    margins = torch.zeros(points.shape[0], dtype=torch.float64)
    with torch.enable_grad(), count_rows(scorer.model, cost):
        for batch in scorer.data.batches(scorer.batch_size):
            gates = points.detach().clone().float().requires_grad_(True)
            margin = scorer.batch_margins(batch, gates)  # [P, b]
            (grad,) = torch.autograd.grad(margin.sum(), gates)  # not .backward(): frozen weights get no .grad
            grads += grad.double().cpu()
            margins += margin.detach().double().sum(1).cpu()
    return grads / scorer.data.n, margins / scorer.data.n


def head_attribution(scorer: Scorer, split: str = "train", *, method: str = "attribution",
                     steps: int = 5) -> Attribution:
    """``A(h)`` for every head on ``scorer``'s data (named ``split`` in the result).

    The scorer supplies the model, the ablation values and the margin (its shared-token rule
    included); the probe scorer has no differentiable margin and is refused. One forward and one
    backward pass per batch of ``scorer.batch_size`` examples and point of :func:`gate_path`.
    """
    n_layers, n_heads = scorer.shape
    alphas = gate_path(method, steps)  # [P]
    cost = RowCount(n_layers, scorer.data.rows_per_example)
    grads, _ = gate_gradients(scorer, alphas[:, None, None].expand(-1, n_layers, n_heads), cost)
    # the midpoint rule's average over the path
    return Attribution(grads.mean(0), scorer.data.n, split, cost, method, len(alphas))


def starting_set(scores: dict[str, float], coverage: float = 0.9) -> list[str]:
    """The fewest heads, best first, whose positive ``A(h)`` sum to ``coverage`` of all positive ``A(h)``.

    Heads with ``A(h) ≤ 0`` never enter: to first order, ablating them does not hurt. The set is
    a start only: the warm search adds heads back in ``A(h)`` order while it scores below ``U``,
    then deletes what it does not need. Ties are broken by head name.
    """
    if not 0 < coverage <= 1:
        raise KmshcError(f"coverage: expected a fraction in (0, 1], got {coverage}")
    ranked = [h for h in sorted(scores, key=lambda h: (-scores[h], h)) if scores[h] > 0]
    total, chosen, acc = sum(scores[h] for h in ranked), [], 0.0
    for h in ranked:
        if acc >= coverage * total:
            break
        chosen.append(h)
        acc += scores[h]
    return chosen
