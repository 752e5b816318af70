"""Redundant circuits: find ``C1``, exclude it, find ``C2`` among the other heads, and so on.

The pure core of ``kmshc redundancy`` (docs/redundancy.md); :mod:`kmshc.redundancy.run` runs it
on a model and :mod:`kmshc.redundancy.report` writes the report.

* :func:`find_circuits` iterates a search ``find(found, budget)`` until the heads left cannot
  reach ``U`` (:class:`~kmshc.search.common.NoSufficientSet`) or a budget is reached.
* :func:`analyze` scores, in ONE batched call on the held-out split, every set the report needs:
  each circuit alone, the unions ``C1 ∪ … ∪ Ck``, the knock-outs ``M \\ (C1 ∪ … ∪ Ck)`` and the
  mixes of the first two circuits, each as a recovery with the certificate's Fieller bounds.
* A mix adds the first ``j`` heads of one circuit (most important first) to all of the other.
  At ``j = |C2|`` the union ``C1 ∪ C2`` is compared with the better circuit alone, paired on the
  same examples: significantly above is ``additive``, significantly below ``interfering``,
  neither ``substitutive`` (either circuit does the job alone; the other adds nothing).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch

from kmshc import stats
from kmshc.search.certificate import Certificate, CertificateConfig, Estimate
from kmshc.search.checks import Checks
from kmshc.search.common import NoSufficientSet, indices, mask_of
from kmshc.search.decide import metric_values
from kmshc.search.verify import knockout_verdict


@dataclass(frozen=True)
class Found:
    """One circuit of the chain: its heads, certificate, search evaluations and file."""

    heads: tuple[str, ...]
    certificate: Optional[Certificate] = None
    evaluations: int = 0
    path: Optional[str] = None
    capped: bool = False


@dataclass(frozen=True)
class Point:
    """One scored set: ``label`` (e.g. ``C1 ∪ C2``, ``M \\ (C1)``), its size and estimate; ``verdict``
    for knock-outs (``backup``, ``partial`` or ``collapse``, as in the certificate)."""

    label: str
    size: int
    estimate: Estimate
    verdict: Optional[str] = None


@dataclass(frozen=True)
class Mix:
    """All of ``base`` plus the first ``sizes[i]`` heads of ``added`` (in ``order``), and those
    heads alone (each an estimate of the recovery)."""

    base: str
    added: str
    order: list[str]
    sizes: list[int]
    with_base: list[Estimate]
    alone: list[Estimate]


@dataclass(frozen=True)
class Dynamics:
    """The two mixes of ``C1`` and ``C2`` and how the union compares with the better one alone:
    ``diff`` (mean paired difference, metric units) and the one-sided p-values of each direction."""

    forward: Mix
    reverse: Mix
    kind: str
    diff: float
    p_additive: float
    p_interfering: float


@dataclass(frozen=True)
class Analysis:
    """Everything :func:`analyze` scores; ``circuits_to_fail``: how many circuits must be knocked
    out before the rest collapses (``None``: it never does within the chain); ``circuits_to_lose``:
    before the rest no longer recovers ``ε − τ`` with confidence."""

    split: str
    n: int
    metric: str
    epsilon: float
    tau: float
    confidence: float
    full: Estimate
    baseline: Estimate
    alone: list[Point]
    unions: list[Point]
    knockouts: list[Point]
    circuits_to_lose: Optional[int]
    circuits_to_fail: Optional[int]
    overlaps: list[list[int]]
    dynamics: Optional[Dynamics] = None


def find_circuits(find: Callable[[list[Found], Optional[int]], Found], *, max_circuits: int,
                  max_evaluations: int | None = None) -> tuple[list[Found], str, str]:
    """``(circuits, stop, why)``: call ``find(circuits so far, evaluations left)`` until it raises
    :class:`NoSufficientSet` (``stop = "no_sufficient_set"``), returns a capped search
    (``"max_evaluations"``, not kept) or an empty set (``"empty_circuit"``), or ``max_circuits``
    are found (``"max_circuits"``)."""
    found: list[Found] = []
    while True:
        spent = sum(f.evaluations for f in found)
        if len(found) >= max_circuits:
            return found, "max_circuits", f"found max_circuits = {max_circuits} circuits"
        if max_evaluations is not None and spent >= max_evaluations:
            return found, "max_evaluations", f"spent {spent} of max_evaluations = {max_evaluations}"
        try:
            f = find(found, None if max_evaluations is None else max_evaluations - spent)
        except NoSufficientSet as e:
            return found, "no_sufficient_set", str(e)
        if not f.heads:  # with S(∅) >= U nothing needs excluding, and excluding nothing would loop
            return found, "empty_circuit", (f"the search for C{len(found) + 1} found the empty set sufficient: "
                                            "the threshold is at or below the baseline's score")
        if f.capped:
            return found, "max_evaluations", (f"the search for C{len(found) + 1} stopped at the evaluation cap "
                                              f"({f.evaluations} evaluations; unfinished set of {len(f.heads)} heads)")
        found.append(f)


class _Masks:
    """Masks scored together, deduplicated by their set of active heads."""

    def __init__(self, shape: tuple[int, int]) -> None:
        self.shape, self.rows, self.masks = shape, {}, []

    def add(self, active: set[int]) -> int:
        key = frozenset(active)
        if key not in self.rows:
            self.rows[key] = len(self.masks)
            self.masks.append(mask_of(active, self.shape))
        return self.rows[key]


def grid(size: int, points: int) -> list[int]:
    """About ``points`` prefix sizes from 0 to ``size``, both included, evenly spread."""
    if size <= 0:
        return [0]
    points = max(2, points)
    return sorted({round(i * size / (points - 1)) for i in range(points)} | {0, size})


def importance_order(found: Found) -> list[str]:
    """The circuit's heads, largest certified drop first (sorted names without a certificate)."""
    if found.certificate is None or not found.certificate.removals:
        return list(found.heads)
    drop = {r.head: r.drop for r in found.certificate.removals}
    return sorted(found.heads, key=lambda h: (-drop.get(h, 0.0), h))


def analyze(outcomes: Callable[[torch.Tensor], Any], shape: tuple[int, int], circuits: Sequence[Found], *,
            epsilon: float, metric: str = "accuracy", config: CertificateConfig = CertificateConfig(),
            mix_points: int = 6, split: str = "test") -> Analysis:
    """Score the chain's sets in one ``outcomes(masks [M, L, H])`` call (see the module docstring)."""
    everything = set(range(shape[0] * shape[1]))
    sets = [set(indices(c.heads, shape)) for c in circuits]
    first = [set().union(*sets[:k]) for k in range(len(sets) + 1)]  # C1 ∪ … ∪ Ck, k = 0..n
    plan = _Masks(shape)
    full, base = plan.add(everything), plan.add(set())
    alone = [plan.add(S) for S in sets]
    unions = [plan.add(U) for U in first[1:]]
    knock = [plan.add(everything - U) for U in first]
    mixes = _mix_rows(plan, circuits, sets, mix_points) if len(sets) >= 2 else None
    out = outcomes(torch.stack(plan.masks))
    x, acc = metric_values(out, metric), metric_values(out, "accuracy")
    chk = Checks(x[full], x[base], epsilon, config, metric)
    est = [chk.estimate(x[i], acc[i]) for i in range(len(plan.masks))]
    names = [f"C{k + 1}" for k in range(len(sets))]
    union_names = [" ∪ ".join(names[:k]) for k in range(len(sets) + 1)]
    kos = [Point(f"M \\ ({union_names[k]})" if k else "M", len(everything) - len(first[k]), est[i],
                 knockout_verdict(chk, est[i])) for k, i in enumerate(knock)]
    lose = next((k for k, p in enumerate(kos) if p.verdict != "backup"), None)
    fail = next((k for k, p in enumerate(kos) if p.verdict == "collapse"), None)
    return Analysis(
        split=split, n=int(x.shape[1]), metric=metric, epsilon=epsilon, tau=config.tau, confidence=config.confidence,
        full=est[full], baseline=est[base],
        alone=[Point(nm, len(S), est[i]) for nm, S, i in zip(names, sets, alone)],
        unions=[Point(union_names[k], len(first[k]), est[i]) for k, i in enumerate(unions, start=1)],
        knockouts=kos, circuits_to_lose=lose, circuits_to_fail=fail,
        overlaps=[[len(a & b) for b in sets] for a in sets],
        dynamics=None if mixes is None else _dynamics(mixes, est, x, chk))


@dataclass(frozen=True)
class _MixRows:
    """Where one mix direction's masks are in the batch: ``Mix`` with row numbers for estimates."""

    mix: Mix  # with_base/alone hold row numbers here
    union: int
    a: int
    b: int


def _mix_rows(plan: _Masks, circuits: Sequence[Found], sets: list[set[int]], points: int) -> list[_MixRows]:
    """Rows of both mix directions between ``C1`` and ``C2`` (added to ``plan``)."""
    rows = []
    for (a, b) in ((0, 1), (1, 0)):
        order = importance_order(circuits[b])
        flat = [indices([h], plan.shape)[0] for h in order]
        sizes = grid(len(order), points)
        mix = Mix(f"C{a + 1}", f"C{b + 1}", order, sizes, [plan.add(sets[a] | set(flat[:j])) for j in sizes],
                  [plan.add(set(flat[:j])) for j in sizes])
        rows.append(_MixRows(mix, plan.add(sets[a] | sets[b]), plan.add(sets[a]), plan.add(sets[b])))
    return rows


def _dynamics(rows: list[_MixRows], est: list[Estimate], x: np.ndarray, chk: Checks) -> Dynamics:
    """Both mixes and the verdict: the union against the better circuit alone, paired."""
    r = rows[0]
    better = r.a if x[r.a].mean() >= x[r.b].mean() else r.b
    # the certificate's paired drop test (exact McNemar on 0/1 outcomes), one side each at α/2
    up, down = stats.drop_p_value(x[r.union], x[better]), stats.drop_p_value(x[better], x[r.union])
    half = chk.cfg.alpha / 2
    kind = "additive" if up < half else "interfering" if down < half else "substitutive"
    mixes = [replace(m.mix, with_base=[est[i] for i in m.mix.with_base], alone=[est[i] for i in m.mix.alone])
             for m in rows]
    return Dynamics(mixes[0], mixes[1], kind, round(float((x[r.union] - x[better]).mean()), 4),
                    round(up, 6), round(down, 6))
