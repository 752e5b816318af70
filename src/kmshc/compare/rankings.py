"""Compare two head rankings, e.g. attribution scores against learned ``log_alpha``.

A ranking is ``{head name: score}``, higher = more important. Two views:

* **top-k overlap**: Jaccard of the ``k`` best heads of each ranking, for a few ``k`` (ties
  broken by head name, so the sets are deterministic);
* **Spearman rank correlation** over the heads both rankings score (``scipy.stats.spearmanr``,
  ties given their average rank), with its two-sided p-value.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

from scipy.stats import spearmanr

from kmshc.compare import jaccard
from kmshc.types import KmshcError


def top_k(scores: Mapping[str, float], k: int) -> list[str]:
    """The ``k`` highest-scoring heads, best first (ties: head name)."""
    return sorted(scores, key=lambda h: (-scores[h], h))[:k]


@dataclass(frozen=True)
class RankingComparison:
    """``jaccard[k]``: Jaccard of the two top-``k`` sets; ``spearman``/``p_value``: rank correlation
    over the ``n`` shared heads (``None`` when undefined: fewer than 2 heads or a constant ranking)."""

    n: int
    jaccard: dict[int, float] = field(default_factory=dict)
    spearman: float | None = None
    p_value: float | None = None

    def to_dict(self) -> dict:
        return {"n": self.n, "jaccard_top_k": {str(k): v for k, v in self.jaccard.items()},
                "spearman": self.spearman, "p_value": self.p_value}


def compare_rankings(a: Mapping[str, float], b: Mapping[str, float],
                     ks: Sequence[int] = (5, 10, 20)) -> RankingComparison:
    """Top-``k`` Jaccard for each ``k`` in ``ks`` (capped at the number of shared heads) and Spearman's rho."""
    shared = sorted(set(a) & set(b))
    if not shared:
        raise KmshcError("the two rankings share no head; are they of the same model?")
    a, b = {h: float(a[h]) for h in shared}, {h: float(b[h]) for h in shared}
    overlap = {min(k, len(shared)): jaccard(top_k(a, k), top_k(b, k)) for k in ks if k > 0}
    rho = p = None
    if len(shared) >= 2 and len(set(a.values())) > 1 and len(set(b.values())) > 1:
        res = spearmanr([a[h] for h in shared], [b[h] for h in shared])
        rho, p = float(res.statistic), float(res.pvalue)
    return RankingComparison(len(shared), overlap, rho, p)


def read_ranking(path: str | Path) -> dict[str, float]:
    """``{head: log_alpha}`` from a run folder or its ``gates.json`` (learned or attribution)."""
    from kmshc.search.gates_file import read_gates
    path = Path(path)
    folder = path.parent if path.name == "gates.json" else path
    _, gates, ranks = read_gates(folder)
    if ranks is None:
        raise KmshcError(f"{folder / 'gates.json'}: not every head has a 'log_alpha' to rank by")
    return ranks
