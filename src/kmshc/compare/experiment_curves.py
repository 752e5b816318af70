"""Faithfulness curves of head rankings scored on one :class:`~kmshc.experiment.Experiment`.

:mod:`kmshc.compare.curves` computes a curve from any score function; here the score is the
experiment's own ``S(·)`` on the mean log-probability margin (the metric MIB normalises), on one
split (the test split by default), optionally only its first ``items`` items, under the
experiment's ablation (:meth:`Experiment.with_ablation` gives the same data under another).

Several rankings scored on the same data share ``S(M)`` and ``S(∅)``: :func:`endpoint_scores`
scores them once, and :func:`ranking_curve` then scores only the inner sizes of each ranking.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch

from kmshc.compare.curves import Curve, sizes, topk_curve
from kmshc.engine.scoring import Scorer
from kmshc.experiment import Experiment
from kmshc.types import KmshcError


def curve_scorer(exp: Experiment, split: str = "test", items: int | None = None) -> Scorer:
    """``exp``'s scorer on ``split``, or on its first ``items`` items (the same ones for every ranking)."""
    if items is not None and items <= 0:
        raise KmshcError(f"items: expected a positive number of {split} items, got {items}")
    chosen = None if items is None else exp.splits[split].items[:items]
    return exp.scorer_for(split, items=chosen)


def mean_margin(scorer: Scorer) -> Callable[[torch.Tensor], torch.Tensor]:
    """masks ``[M, L, H]`` -> the mean margin of each ``[M]``: the curves' ``S``."""
    return lambda masks: scorer.outcomes(masks).margin.mean(1)


def endpoint_scores(exp: Experiment, *, split: str = "test", items: int | None = None) -> tuple[float, float]:
    """``(S(M), S(∅))``: the mean margin with every head and with none (both ablated as ``exp`` says)."""
    shape = exp.shape
    scores = mean_margin(curve_scorer(exp, split, items))(torch.stack([torch.ones(shape), torch.zeros(shape)]))
    return float(scores[0]), float(scores[1])


def ranking_curve(exp: Experiment, ranking: Sequence[str], ks: Sequence[int | float] | None = None, *,
                  label: str = "", split: str = "test", items: int | None = None,
                  endpoints: tuple[float, float] | None = None) -> Curve:
    """The faithfulness curve of a complete ``ranking`` of ``exp``'s heads.

    ``ks``: circuit sizes, as :func:`kmshc.compare.curves.sizes` reads them (head counts or
    fractions; ``None``: the default grid); ``endpoints``: ``(S(M), S(∅))`` from
    :func:`endpoint_scores` on the same split and items, so that only the inner sizes are scored.
    """
    n_layers, n_heads = exp.shape
    grid = sizes(n_layers * n_heads, ks)
    return topk_curve(ranking, mean_margin(curve_scorer(exp, split, items)), grid, n_layers, n_heads,
                      label=label, endpoints=endpoints)
