"""Section 4 data: faithfulness curves of every ranking in a run folder, in one batched scoring call.

Rankings (:mod:`kmshc.compare.curve_runs`): each circuit file of the folder gives one (a learned circuit:
every head by ``log_alpha``; a searched one: its heads first, then the rest), and a ``kmshc rank``
folder's ``gates.json`` gives its score order. All top-k masks of all rankings, with duplicates
(``k = 0`` and ``k = N`` are common to all) scored once, go to one call of the scorer on the first
``n_items`` test items: the curve is a picture, the certificate carries the statistics.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from kmshc.compare.curves import Curve, curve_from_scores, grid, ranking_from_gates, topk_masks
from kmshc.view.gather import RANKING_METHODS, RunFiles, head_field

METRICS = ("margin", "accuracy")


@dataclass(frozen=True)
class Curves:
    """``curves[metric]``: one :class:`~kmshc.compare.curves.Curve` per ranking; ``skipped``: why a metric
    has none (no gap between the full and the empty model on these items)."""

    curves: dict[str, list[Curve]]
    n_items: int
    skipped: tuple[str, ...]


def rankings(files: RunFiles, shape: tuple[int, int]) -> list[tuple[str, list[str]]]:
    """``(label, every head most important first)`` per ranking in the folder, duplicates dropped."""
    from kmshc.compare.entries import load_entries
    from kmshc.compare.curve_runs import entry_ranking
    out = [(e.method, entry_ranking(e, *shape)) for e in load_entries([files.run_dir])]
    method = (files.gates or {}).get("method")
    scores = head_field(files.gates, "log_alpha")
    if method in RANKING_METHODS and scores:
        out.append((str(method), ranking_from_gates(scores, *shape)))
    seen, unique = set(), []
    for label, r in out:
        if tuple(r) not in seen:
            seen.add(tuple(r))
            unique.append((label, r))
    return unique


def unique_masks(ranked: Sequence[Sequence[str]], ks: Sequence[int], shape: tuple[int, int]):
    """``(masks [M, L, H], index [R, len(ks)])``: the distinct top-k masks of every ranking and,
    per ranking and k, the row of its mask."""
    rows: dict[bytes, int] = {}
    masks, index = [], []
    for r in ranked:
        idx = []
        for m in topk_masks(list(r), ks, *shape):
            key = m.to(torch.bool).numpy().tobytes()
            if key not in rows:
                rows[key] = len(masks)
                masks.append(m)
            idx.append(rows[key])
        index.append(idx)
    return torch.stack(masks), torch.tensor(index)


def score_curves(exp, files: RunFiles, shape: tuple[int, int], n_items: int = 16) -> Curves:
    """Curves of :func:`rankings` on the first ``n_items`` of ``exp``'s test split."""
    labelled = rankings(files, shape)
    ks = grid(shape[0] * shape[1])
    masks, index = unique_masks([r for _, r in labelled], ks, shape)
    test = exp.splits["test"]
    scorer = exp.scorer_for("test", items=test.items[:n_items])
    o = scorer.outcomes(masks)
    per_metric = {"margin": o.margin.mean(1), "accuracy": o.accuracy}
    curves: dict[str, list[Curve]] = {m: [] for m in METRICS}
    skipped = []
    for (label, _), idx in zip(labelled, index):
        for m in METRICS:
            v = [float(per_metric[m][i]) for i in idx]
            if v[-1] == v[0]:
                skipped.append(f"{label} ({m}): S(M) = S(∅) = {v[0]:.4f}, nothing to normalise by")
                continue
            curves[m].append(curve_from_scores(label, shape[0] * shape[1], ks, v, full=v[-1], empty=v[0]))
    return Curves(curves, min(n_items, len(test.items)), tuple(skipped))


def experiment_of(files: RunFiles):
    """The :class:`~kmshc.experiment.Experiment` recorded in the circuit file (``None``: none recorded)."""
    from kmshc.experiment import Experiment
    d = files.circuit.config.get("experiment") if isinstance(files.circuit.config, dict) else None
    if not isinstance(d, dict):
        return None
    return Experiment.from_dict(d, where=f"{Path(files.circuit_path)}: config.experiment")
