"""Build a :class:`~kmshc.search.certificate.Certificate` for a circuit on a held-out split.

``outcomes(masks [M, L, H])`` returns per-example ``correct`` and ``margin`` ``[M, n]``
(:meth:`kmshc.engine.scoring.Scorer.outcomes`). The masks of the circuit, its single-head removals,
its knock-out and the first stage of every negative control are scored in one batched call; a
control that survives its first checks (it should not) has its removals scored in a second.
The rules are in :mod:`kmshc.search.certificate` and docs/certificate.md.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Sequence

import numpy as np
import torch

from kmshc import stats
from kmshc.search.certificate import Certificate, CertificateConfig, Control, Knockout, Look, OpenCheck, Restore
from kmshc.search.checks import Checks
from kmshc.search.controls import controls as _controls
from kmshc.search.decide import metric_values
from kmshc.search.common import indices, names
from kmshc.search.plan import CertificatePlan
from kmshc.search.sequential import OPEN, PASSED, REFUTED, Sequential, look_alphas, run_looks, schedule
from kmshc.types import KmshcError


def _values(out: Any, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """``(metric values, 0/1 correctness)``, each ``[M, n]``."""
    return metric_values(out, metric), metric_values(out, "accuracy")


# (k, count) -> an outcomes function over ``count`` fresh test items for round k and a line saying
# where they came from; None when the source has no more items
MoreItems = Callable[[int, int], "tuple[Callable[[torch.Tensor], Any], str] | None"]


def certify(outcomes: Callable[[torch.Tensor], Any], shape: tuple[int, int], heads: Sequence[str], *,
            semantics: str = "keep", epsilon: float = 0.9, threshold: float | None = None, K: int = 1,
            baseline_heads: Sequence[str] = (), metric: str = "accuracy",
            config: CertificateConfig = CertificateConfig(), split: str = "test",
            skipped: dict | None = None, pool: Sequence[str] | None = None,
            more: MoreItems | None = None, max_items: int | None = None) -> Certificate:
    """The certificate of circuit ``heads`` (see :mod:`kmshc.search.certificate`).

    Args:
        outcomes: ``masks [M, L, H] -> Outcome`` with ``correct``/``margin`` ``[M, n]``.
        threshold: an absolute score instead of ``ε``; it is turned into the ``ε`` it means on
            this split, ``(threshold − S(B)) / (S(M) − S(B))``.
        baseline_heads: heads kept on in the baseline ``B`` (default ``∅``: all ablated).
        metric: what ``S`` averages per example: ``accuracy`` (0/1) or the log-prob ``margin``.
        pool: the heads the random controls draw from (default: all); a backup circuit found
            outside excluded circuits is compared with random sets from the same allowed heads.
        more: fresh test items while the verdict is undecided (keep semantics): looks at ``n``,
            ``2n``, ... up to ``max_items`` items in all, spending ``α·t^ρ`` (``config.spending_power``)
            (:mod:`kmshc.search.sequential`). None: one look at the test split, at the full ``α``.
    """
    if metric not in ("accuracy", "margin"):
        raise KmshcError(f"metric: expected 'accuracy' or 'margin', got {metric!r}")
    if semantics not in ("keep", "paper"):
        raise KmshcError(f"semantics: expected 'keep' or 'paper', got {semantics!r}")
    if not 0 < epsilon <= 1:
        raise KmshcError(f"epsilon: expected a value in (0, 1], got {epsilon}")
    t0 = time.perf_counter()
    C = indices(heads, shape, where="circuit heads")
    if semantics == "paper" and C and not 1 <= K <= len(C):
        raise KmshcError(f"K: the bundle size must be between 1 and |C| = {len(C)}, got {K}")
    allowed = None if pool is None else set(indices(pool, shape, where="control pool")) | set(C)
    plan = CertificatePlan(shape, C, semantics, K, config, indices(baseline_heads, shape), allowed)
    out = outcomes(torch.stack(plan.masks))
    x, acc = _values(out, metric)
    if threshold is not None:
        gap = x[0].mean() - x[1].mean()
        epsilon = float((threshold - x[1].mean()) / gap) if gap else 1.0
    chk = Checks(x[0], x[1], epsilon, config, metric)
    cert = _assemble(plan, chk, x, acc, outcomes, split)
    evaluations = plan.evaluations
    if semantics == "keep" and C:
        sizes = schedule(x.shape[1], max_items if more is not None else None)
        seq = Sequential(list(names(C, shape)), epsilon, config, metric)
        rows = {"full": (x[0], acc[0]), "base": (x[1], acc[1]), "circuit": (x[2], acc[2]),
                **{n: (x[plan.row[("without", h)]], acc[plan.row[("without", h)]]) for n, h in zip(seq.heads, C)}}
        scored: list[int] = []
        looks, _ = run_looks(seq, rows, _fresh_rows(more, plan, metric, scored), sizes,
                             look_alphas(sizes, config.alpha, config.spending_power), split)
        cert = _sequential_fields(cert, seq, looks, chk)
        evaluations += sum(scored)
    return Certificate(**cert, skipped=skipped, evaluations=evaluations,
                       wall_time_s=round(time.perf_counter() - t0, 3))


def _fresh_rows(more: MoreItems | None, plan: CertificatePlan, metric: str, scored: list[int]):
    """``run_looks``' source of fresh values: the masks of the rows it asks for, scored on the
    items ``more`` draws; ``scored`` collects how many masks each round scored."""
    shape = plan.shape
    key = {"full": ("full",), "base": ("base",), "circuit": ("circuit",),
           **{n: ("without", h) for n, h in zip(names(plan.C, shape), plan.C)}}

    def fetch(k: int, count: int, rows: list[str]):
        got = more(k, count) if more is not None else None
        if got is None:
            return None
        fn, where = got
        x, acc = _values(fn(torch.stack([plan.masks[plan.row[key[r]]] for r in rows])), metric)
        scored.append(len(rows))
        return {r: (x[i], acc[i]) for i, r in enumerate(rows)}, where
    return fetch


def _sequential_fields(cert: dict, seq: Sequential, looks: list[Look], chk: Checks) -> dict:
    """``cert`` with its checks replaced by the sequential ones (the controls and knock-out stay those
    of the first look, at the full ``α``)."""
    removals = [seq.checks[h].removal for h in seq.heads]
    circ = seq.checks["sufficiency"].estimate
    ok, why, failing = chk.keep_verdict(circ, removals)
    gap = seq.checks["gap"].status
    if gap != PASSED:
        why.insert(0, f"no usable gap: the full-vs-baseline accuracy gap's lower bound is {seq.gap_lower:.3f} "
                      f"< min_gap = {chk.cfg.min_gap}" + (" (refuted: its upper bound is below too)"
                                                          if gap == REFUTED else ""))
    controls = cert["controls"]
    if any(c.verified for c in controls):
        why.append("a negative control verified too: the certificate cannot tell circuits apart on this split")
    verdict = ("refuted" if seq.verdict == "refuted" or any(c.verified for c in controls)
               else seq.verdict)
    undecided = [OpenCheck(name, _why_open(name, d), d.n_needed) for name, d in seq.checks.items() if d.status == OPEN]
    needs = [u.n_needed for u in undecided]
    return {**cert, "n": looks[-1].n, "circuit": circ, "removals": removals, "failing_heads": failing,
            "reasons": why, "usable_gap": gap == PASSED, "gap_accuracy_lower": round(seq.gap_lower, 4),
            "epsilon_range": chk.epsilon_range(circ, removals) if gap == PASSED else None,
            "verified": verdict == "verified", "verdict": verdict, "rounds": looks, "undecided": undecided,
            "n_needed": max(needs) if needs and None not in needs else None}


def _why_open(name: str, d) -> str:
    if name == "gap":
        return "the accuracy gap's bounds straddle min_gap"
    if name == "sufficiency":
        return f"r(C)'s bounds [{d.estimate.lower}, {d.estimate.upper}] straddle eps - tau"
    r = d.removal
    return (f"without it r = {r.estimate.recovery} [{r.estimate.lower}, {r.estimate.upper}], drop p (Holm) = "
            f"{r.p_holm}: neither necessary nor removable yet")


def _assemble(plan: CertificatePlan, chk: Checks, x: np.ndarray, acc: np.ndarray, outcomes, split: str) -> dict:
    """Every field of the certificate but the bookkeeping ones, from the first-stage values."""
    cfg, C, shape = chk.cfg, plan.C, plan.shape
    est = {k: chk.estimate(x[i], acc[i]) for k, i in plan.row.items()}
    circ = est[("circuit",)]
    usable, gap_lo = chk.usable_gap(acc[0], acc[1], circ)
    reasons: list[str] = [] if usable else [
        f"no usable gap: the full-vs-baseline accuracy gap's lower bound is {gap_lo:.3f} < min_gap = {cfg.min_gap} "
        f"(or the {chk.metric} gap is not significantly positive), so a recovery ratio means nothing here"]
    removals, restores, failing, bound = [], [], [], None
    if plan.semantics == "keep":
        xs = [x[plan.row[("without", h)]] for h in C]
        removals = chk.removals(names(C, shape), x[2], xs, [acc[plan.row[("without", h)]] for h in C])
        ok, why, failing = chk.keep_verdict(circ, removals)
        reasons += why
        eps_range = chk.epsilon_range(circ, removals) if usable else None
    else:
        restores = [Restore(list(names(b, shape)), est[("restore", b)], chk.sufficient(est[("restore", b)]))
                    for b in plan.bundles]
        ok, why, failing = _paper_verdict(chk, est[("knockout",)], restores)
        reasons += why
        bound = (stats.zero_failure_bound(len(restores), cfg.confidence) if plan.sampled and ok
                 else sum(not r.passes for r in restores) / max(1, len(restores)))
        eps_range = None
    if not C:
        ok, reasons = False, reasons + ["empty circuit"]
    controls = _controls(plan, chk, x, acc, outcomes, removals)
    if any(c.verified for c in controls):
        ok = False
        reasons.append("a negative control verified too: the certificate cannot tell circuits apart on this split")
    verified = bool(usable and ok)
    return dict(split=split, n=int(x.shape[1]), metric=chk.metric, confidence=cfg.confidence, epsilon=chk.epsilon,
                tau=cfg.tau, semantics=plan.semantics, K=plan.K, full=est[("full",)], baseline=est[("base",)],
                circuit=circ, threshold=round(float(x[1].mean() + chk.epsilon * (x[0].mean() - x[1].mean())), 4),
                gap_accuracy_lower=round(gap_lo, 4), usable_gap=bool(usable), removals=removals,
                epsilon_range=eps_range, knockout=Knockout(est[("knockout",)], knockout_verdict(chk, est[("knockout",)])),
                controls=controls, verified=verified, failing_heads=failing, reasons=reasons,
                n_needed=None if verified else _n_needed(plan, chk, x, acc, removals, usable),
                verdict="verified" if verified else "undecided",
                rounds=[Look(int(x.shape[1]), int(x.shape[1]), cfg.alpha, split, [])],
                restores=restores, restore_bound=None if bound is None else round(bound, 4))


def _paper_verdict(chk: Checks, knockout, restores) -> tuple[bool, list[str], list[str]]:
    """Paper semantics: every restore clears ``ε − τ``, and ablating ``C`` really breaks the task
    (upper bound of ``r(M \\ C)`` below ``ε − τ``); without that, every restore passes trivially."""
    why, failing = [], []
    breaks = knockout.upper is not None and knockout.upper < chk.epsilon - chk.cfg.tau
    if not breaks:
        why.append(f"ablating C does not clearly break the task (upper bound of r(M \\ C) = {knockout.upper})")
    fails = [r for r in restores if not r.passes]
    for r in fails:
        failing += [h for h in r.heads if h not in failing]
    if fails:
        why.append(f"{len(fails)} of {len(restores)} restore bundles do not clear eps - tau with confidence")
    return breaks and bool(restores) and not fails, why, failing


def knockout_verdict(chk: Checks, e) -> str:
    if chk.sufficient(e):
        return "backup"
    return "collapse" if e.upper is not None and e.upper <= 0.5 else "partial"


def _n_needed(plan: CertificatePlan, chk: Checks, x: np.ndarray, acc: np.ndarray, removals, usable: bool) -> int | None:
    """Test-split size at which every failing check would pass with 80% power, from the observed
    effects; ``None`` when some failing check points the wrong way (no size would pass it)."""
    cfg, xm, xb = chk.cfg, chk.x_full, chk.x_base
    level_alpha = 1 - chk.level
    needs: list[int | None] = []
    if not usable:
        needs.append(stats.n_needed(acc[0] - acc[1] - cfg.min_gap, level_alpha))
    xc = x[plan.row[("circuit",)]]
    if not chk.sufficient(chk.estimate(xc, acc[plan.row[("circuit",)]])):
        needs.append(stats.n_needed((xc - xb) - (chk.epsilon - cfg.tau) * (xm - xb), level_alpha))
    for h, r in zip(plan.C, removals):
        if r.cls == "necessary":
            continue
        xh = x[plan.row[("without", h)]]
        needs.append(stats.n_needed(xc - xh, cfg.alpha / max(1, len(removals))))
        if not chk.below_window(r.estimate):
            needs.append(stats.n_needed((chk.epsilon + cfg.tau) * (xm - xb) - (xh - xb), level_alpha))
    if not needs or any(n is None for n in needs):
        return None
    return max(needs)
