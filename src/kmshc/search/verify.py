"""The certificate (DESIGN §1, FORMATS.md): a circuit checked on a split the search never saw.

All masks of one certificate are scored in one batched call of ``outcomes(masks [M, L, H])``
(``kmshc.scoring.Scorer.outcomes``), which returns per-example ``correct`` and ``margin``
``[M, n]``. Intervals are paired bootstrap percentile intervals over examples; a head of ``C``
is *removable* when ``S(C \\ {h})`` still reaches ``U`` on this split, *necessary
(significant)* when it falls below ``U`` with one-sided paired bootstrap p < 1 − confidence,
and *necessary (not significant)* otherwise.
"""
from __future__ import annotations

import math
import random
import time
from itertools import combinations
from typing import Any, Callable, Sequence

import torch

from kmshc.search.common import indices, mask_of, names
from kmshc.search.stats import (bootstrap_indices, bootstrap_means, mcnemar_p, one_sided_p_at_least,
                                percentile_interval, zero_failure_bound)
from kmshc.types import KmshcError


def _interval(x: torch.Tensor, confidence: float) -> list[float]:
    return [round(v, 4) for v in percentile_interval(x, confidence)]


def _restore_bundles(C: list[int], K: int, n_samples: int, seed: int) -> tuple[list[tuple[int, ...]], bool]:
    """Every K-bundle of ``C`` when there are at most ``n_samples``, else ``n_samples`` random ones."""
    total = math.comb(len(C), K)
    if total <= n_samples:
        return [tuple(b) for b in combinations(C, K)], False
    rng = random.Random(seed)
    return [tuple(sorted(rng.sample(C, K))) for _ in range(n_samples)], True


def certify(outcomes: Callable[[torch.Tensor], Any], shape: tuple[int, int], heads: Sequence[str],
            semantics: str = "keep", epsilon: float = 0.9, threshold: float | None = None, K: int = 1,
            baseline_heads: Sequence[str] = (), confidence: float = 0.95, n_boot: int = 2000,
            restore_samples: int = 100, seed: int = 0, split: str = "test") -> dict[str, Any]:
    """Build the certificate dict of FORMATS.md for circuit ``heads``.

    Args:
        outcomes: ``masks [M, L, H] -> Outcome`` with ``correct``/``margin`` ``[M, n]``.
        baseline_heads: heads kept on in the baseline ``B`` (default ``∅``: all ablated).
        threshold: an absolute threshold instead of ``U_ε`` (recomputed on this split).
        restore_samples: paper semantics, K > 1: how many K-bundles to sample at most.
    """
    if semantics not in ("keep", "paper"):
        raise KmshcError(f"semantics: expected 'keep' or 'paper', got {semantics!r}")
    if not 0 < epsilon <= 1:
        raise KmshcError(f"epsilon: expected a value in (0, 1], got {epsilon}")
    t0 = time.perf_counter()
    C = indices(heads, shape, where="circuit heads")
    everything = set(range(shape[0] * shape[1]))
    masks = [mask_of(everything, shape), mask_of(indices(baseline_heads, shape), shape), mask_of(C, shape)]
    sampled, bundles = False, []
    if semantics == "keep":
        masks += [mask_of(set(C) - {h}, shape) for h in C]
    else:
        if C and not 1 <= K <= len(C):
            raise KmshcError(f"K: the bundle size must be between 1 and |C| = {len(C)}, got {K}")
        bundles, sampled = _restore_bundles(C, K, restore_samples, seed) if C else ([], False)
        masks.append(mask_of(everything - set(C), shape))  # paper semantics: C ablated, the rest on
        masks += [mask_of((everything - set(C)) | set(b), shape) for b in bundles]
    out = outcomes(torch.stack(masks))
    correct, margin = out.correct.double(), out.margin.double()
    n = correct.shape[1]
    acc = correct.mean(-1)
    m = margin.mean(-1)
    boot = bootstrap_means(correct, bootstrap_indices(n, n_boot, seed))  # [M, n_boot]
    alpha = 1 - confidence
    if threshold is None:
        U, U_boot = float(acc[1] + epsilon * (acc[0] - acc[1])), boot[1] + epsilon * (boot[0] - boot[1])
    else:
        U, U_boot = float(threshold), torch.full((n_boot,), float(threshold), dtype=torch.float64)
    gap = float(m[0] - m[1])
    cert: dict[str, Any] = {
        "split": split, "n": n, "confidence": confidence, "epsilon": epsilon, "semantics": semantics, "K": K,
        "full": {"accuracy": round(float(acc[0]), 4), "ci": _interval(boot[0], confidence), "margin": round(float(m[0]), 4)},
        "baseline": {"accuracy": round(float(acc[1]), 4), "ci": _interval(boot[1], confidence),
                     "margin": round(float(m[1]), 4), "heads_on": len(baseline_heads)},
        "threshold": {"value": round(U, 4), "ci": _interval(U_boot, confidence),
                      "kind": "relative" if threshold is None else "absolute"},
    }
    reasons: list[str] = []
    failing: list[str] = []
    # S(C) with only C active, in both semantics, so circuits of every method compare directly
    circ = {"accuracy": round(float(acc[2]), 4), "ci": _interval(boot[2], confidence), "margin": round(float(m[2]), 4),
            "margin_recovery": round((float(m[2]) - float(m[1])) / gap, 4) if gap else None,
            "p_below_threshold": round(1 - one_sided_p_at_least(boot[2] - U_boot), 4)}
    cert["circuit"] = circ
    if semantics == "keep":
        sufficient = float(acc[2]) >= U
        removals = []
        for j, h in enumerate(C):
            row = 3 + j
            a = float(acc[row])
            p = one_sided_p_at_least(boot[row] - U_boot)
            cls = "removable" if a >= U else ("necessary_significant" if p < alpha else "necessary_not_significant")
            removals.append({"head": names([h], shape)[0], "accuracy": round(a, 4), "delta": round(a - float(acc[2]), 4),
                             "ci": _interval(boot[row] - boot[2], confidence), "p_value": round(p, 4),
                             "mcnemar_p": round(mcnemar_p(correct[2], correct[row]), 4), "class": cls})
        cert["removals"] = removals
        removable = [r["head"] for r in removals if r["class"] == "removable"]
        if not sufficient:
            reasons.append(f"insufficient: S(C) = {float(acc[2]):.4f} < U = {U:.4f} on {split} (n = {n})")
            failing += list(names(C, shape))
        if removable:
            reasons.append(f"not 1-minimal on {split}: removing {', '.join(removable)} still reaches U = {U:.4f}")
            failing += [h for h in removable if h not in failing]
        verified = sufficient and not removable
    else:
        restores = []
        for j, b in enumerate(bundles):
            row = 4 + j
            restores.append({"heads": list(names(b, shape)), "accuracy": round(float(acc[row]), 4),
                             "ci": _interval(boot[row], confidence), "passes": float(acc[row]) >= U})
        fails = [r for r in restores if not r["passes"]]
        circ.update(ablated_accuracy=round(float(acc[3]), 4), ablated_ci=_interval(boot[3], confidence),
                    worst_restore=min((r["accuracy"] for r in restores), default=None))
        cert.update(restores=restores, sampled=sampled, n_samples=len(bundles),
                    bound=round(zero_failure_bound(len(bundles), confidence), 4) if sampled and not fails else
                    (0.0 if not fails else round(len(fails) / max(1, len(bundles)), 4)))
        cert["removals"] = []
        reasons.append("paper semantics: single-head removals are not checked (inclusion-minimality is "
                       "degenerate there: any |C| = K set restores M); sufficiency = every restore passes")
        if not C:
            reasons.append("empty circuit")
        for r in fails:
            failing += [h for h in r["heads"] if h not in failing]
        if fails:
            reasons.append(f"{len(fails)} of {len(bundles)} restore bundles fall below U = {U:.4f} on {split}")
        verified = bool(C) and not fails
    cert.update(verified=bool(verified), failing_heads=failing, reasons=reasons, evaluations=len(masks),
                wall_time_s=round(time.perf_counter() - t0, 3))
    return cert
