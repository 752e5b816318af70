"""Negative controls of a certificate: sets that must NOT verify under the same rules.

* ``random``: random sets of ``|C|`` heads;
* ``minus_top``: ``C`` without its most important head (the largest drop);
* ``plus_random``: ``C`` plus random heads from outside it.

Each control is checked in two stages so that it costs little: the first-stage masks (the set
itself, and for ``plus_random`` the set without each added head) are scored with the circuit's
own batch; a control that survives those checks, which a sound certificate makes rare, has all
its single-head removals scored in a second batched call and gets the full verdict.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch

from kmshc.search.certificate import Control, Removal
from kmshc.search.checks import Checks
from kmshc.search.common import mask_of, names
from kmshc.search.decide import metric_values
from kmshc.search.plan import CertificatePlan


def first_stage(kind: str, S: list[int], C: list[int], row: dict, chk: Checks, x: np.ndarray,
                acc: np.ndarray, semantics: str) -> str | None:
    """Why the control already fails on first-stage values, or ``None`` if it survives them."""
    e = chk.estimate(x[row[("set", tuple(S))]], acc[row[("set", tuple(S))]])
    if semantics == "paper":  # the row holds M \\ S: ablating S must break the task
        ok = e.upper is not None and e.upper < chk.epsilon - chk.cfg.tau
        return None if ok else f"ablating it does not break the task (upper bound {e.upper})"
    if not chk.sufficient(e):
        return f"insufficient (lower bound of recovery {e.lower})"
    if kind == "plus_random":
        extra = [h for h in S if h not in C]
        xs = [x[row[("set", tuple(sorted(set(S) - {h})))]] for h in extra]
        accs = [acc[row[("set", tuple(sorted(set(S) - {h})))]] for h in extra]
        rem = chk.removals([str(h) for h in extra], x[row[("set", tuple(S))]], xs, accs)
        bad = [r for r in rem if r.cls != "necessary"]
        if bad:
            return f"{len(bad)} added head(s) not necessary"
    return None


def controls(plan: CertificatePlan, chk: Checks, x: np.ndarray, acc: np.ndarray,
             outcomes: Callable[[torch.Tensor], Any], removals: Sequence[Removal]) -> list[Control]:
    """All controls of ``plan`` with their verdicts (see the module docstring)."""
    shape, C = plan.shape, plan.C
    sets = list(plan.controls)
    if plan.semantics == "keep" and len(C) > 1 and removals:
        top = max(removals, key=lambda r: (r.drop, r.head))
        sets.append(("minus_top", plan.without(C[list(names(C, shape)).index(top.head)])))
    results: list[Control | None] = []
    second: list[tuple[int, list[int]]] = []
    for i, (kind, S) in enumerate(sets):
        why = first_stage(kind, S, C, plan.row, chk, x, acc, plan.semantics)
        results.append(Control(kind, list(names(S, shape)), False, why) if why else None)
        if why is None:
            second.append((i, S))
    for i, S in second:  # rare: a control that survived its first checks gets the full verdict
        kind = sets[i][0]
        results[i] = _full_check(kind, S, plan, chk, outcomes, x)
    return [r for r in results if r is not None]


def _full_check(kind: str, S: list[int], plan: CertificatePlan, chk: Checks, outcomes, x: np.ndarray) -> Control:
    shape = plan.shape
    everything = set(range(shape[0] * shape[1]))
    if plan.semantics == "paper":  # restore every single head of S on top of M \\ S
        masks = [mask_of((everything - set(S)) | {h}, shape) for h in S]
        out = outcomes(torch.stack(masks))
        vals, accs = metric_values(out, chk.metric), metric_values(out, "accuracy")
        ests = [chk.estimate(v, a) for v, a in zip(vals, accs)]
        ok = all(chk.sufficient(e) for e in ests)
        return Control(kind, list(names(S, shape)), ok, "every restore passes" if ok else "a restore fails")
    masks = [mask_of(set(S), shape)] + [mask_of(set(S) - {h}, shape) for h in S]
    out = outcomes(torch.stack(masks))
    vals, accs = metric_values(out, chk.metric), metric_values(out, "accuracy")
    rem = chk.removals(list(names(S, shape)), vals[0], list(vals[1:]), list(accs[1:]))
    bad = [r.head for r in rem if r.cls != "necessary"]
    ok = chk.sufficient(chk.estimate(vals[0], accs[0])) and not bad
    return Control(kind, list(names(S, shape)), ok, "passed every check" if ok else f"not necessary: {', '.join(bad)}")
