"""Where the gates start (``--model.init``): every ``log_alpha`` at ``init_log_alpha``, or spread by a
training-free head ranking on the train split.

``constant`` (default): every head at ``init_log_alpha``. ``attribution`` / ``integrated_gradients``:
the heads' scores from :func:`kmshc.rank.attribution.head_attribution` on the **train** split (never
val or test, which judge the circuit) set the start through :func:`log_alpha_from_scores`: a
rank rule, since attribution scores are heavy-tailed (a few heads carry most of the sum), so their
raw values would start one head far open and all others alike. This is the sequential ensemble of
Mondorf et al. (2025, arXiv:2510.06811), who warm-start edge pruning from EAP-IG scores, applied
to head gates.

The ranking's forward and backward passes are counted (:mod:`kmshc.engine.cost`) and added to the
run's cost by the module.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from scipy.stats import rankdata

from kmshc.engine.cost import RowCount
from kmshc.experiment import Experiment
from kmshc.rank.attribution import Attribution, head_attribution
from kmshc.rank.run import RankSettings
from kmshc.types import KmshcError

INITS = ("constant", "attribution", "integrated_gradients")
SPLIT = "train"  # the ranking's split: the one the gates are trained on


def rank_quantiles(scores: torch.Tensor) -> torch.Tensor:
    """Each entry's rank among all entries of ``scores`` (any shape), as a quantile in ``[0, 1]``:
    0 for the lowest score, 1 for the highest, ``(#lower + (#equal − 1)/2) / (N − 1)`` in general,
    so tied scores share their mean rank. One entry, or all tied: 0.5. Same shape, float64."""
    flat = scores.detach().double().flatten()
    if not torch.isfinite(flat).all():
        raise KmshcError("model.init: the head scores hold a NaN or infinite value; cannot rank them")
    n = flat.numel()
    if n == 1:
        return torch.full_like(scores, 0.5, dtype=torch.float64)
    ranks = torch.from_numpy(rankdata(flat.numpy(), method="average"))  # 1..n, ties share their mean rank
    return ((ranks - 1) / (n - 1)).view(scores.shape)


def log_alpha_from_scores(scores: torch.Tensor, init_log_alpha: float) -> torch.Tensor:
    """``log_alpha`` ``[L, H]`` (float32) from head scores ``[L, H]`` (higher: the head matters more).

    ``log_alpha = a · (2q − 1)`` with ``a = init_log_alpha`` (> 0) and ``q`` the score's rank
    quantile (:func:`rank_quantiles`): the best head starts at ``+a``, as open as the constant
    start; the median at 0 (deterministic gate 0.5); the worst at ``−a``, near closed. Equal scores
    start equal; only the order of the scores matters, and the spread stays ``2a`` whatever their
    scale, so the task loss can still move any gate across."""
    if not init_log_alpha > 0:
        raise KmshcError(f"model.init_log_alpha: a ranked start spreads the gates over [-a, +a] with "
                         f"a = init_log_alpha, which must be > 0; got {init_log_alpha}")
    return (init_log_alpha * (2 * rank_quantiles(scores) - 1)).float()


@dataclass(frozen=True)
class GateInit:
    """How the gates started: ``init`` (one of :data:`INITS`), ``log_alpha`` ``[L, H]`` and, for a
    ranked start, the ``ranking`` it came from (its scores, examples and cost)."""

    init: str
    init_log_alpha: float
    log_alpha: torch.Tensor
    ranking: Attribution | None = None

    @property
    def cost(self) -> RowCount | None:
        return None if self.ranking is None else self.ranking.cost

    def to_dict(self) -> dict[str, Any]:
        """The ``init`` record of gates.json and circuit_learned.json."""
        d: dict[str, Any] = {"method": self.init, "init_log_alpha": self.init_log_alpha}
        if self.ranking is not None:
            r = self.ranking
            d.update(rule="rank: log_alpha = init_log_alpha * (2q - 1), q the score's rank quantile",
                     split=r.split, n=r.n, steps=r.steps, example_forwards=round(r.cost.example_forwards, 3))
        return d


def check_init(init: str) -> None:
    if init not in INITS:
        raise KmshcError(f"model.init: expected one of {', '.join(INITS)}, got {init!r}")


def gate_init(experiment: Experiment, init: str, init_log_alpha: float) -> GateInit:
    """The gates' start for ``experiment`` (:class:`GateInit`); a ranked start runs the ranking now,
    on the train split, with ``experiment``'s scorer (integrated gradients: ``RankSettings.steps``)."""
    check_init(init)
    n_layers, n_heads = experiment.shape
    if init == "constant":
        return GateInit(init, init_log_alpha, torch.full((n_layers, n_heads), float(init_log_alpha)))
    if init_log_alpha <= 0:  # refused before the ranking's cost is spent
        log_alpha_from_scores(torch.zeros(1), init_log_alpha)
    if experiment.scorer == "probe":
        raise KmshcError(f"model.init: {init} needs a differentiable margin (scorer pair_logprob or label_tokens); "
                         "data.experiment.scorer is probe")
    ranking = head_attribution(experiment.scorer_for(SPLIT), SPLIT, method=init, steps=RankSettings.steps)
    return GateInit(init, init_log_alpha, log_alpha_from_scores(ranking.scores, init_log_alpha), ranking)
