"""Tables of a comparison: one row per circuit, one per pair, and the cross-task/cross-seed analysis.

Built from :class:`~kmshc.compare.entries.Entry` objects with the pure functions of
:mod:`kmshc.compare.entries`.
``rescore`` is the only part that loads a model; it is imported lazily and used only on request.
"""
from __future__ import annotations

import itertools
import json
from collections import defaultdict
from typing import Any, Mapping, Sequence

import torch

from kmshc.stats import bootstrap_means, percentile_interval

from kmshc.compare.entries import (LEVELS, Entry, classify_heads, depth_summary, head_frequency,
                                   layer_counts, mean_layer_distribution, mean_pairwise_jaccard, overlap_matrix,
                                   pair_stats)


# --------------------------------------------------------------------------- scores
def recorded_scores(entry: Entry) -> dict[str, Any]:
    """Test-split scores as the circuit file records them: certificate first, then ``scores.test``.

    Reads both certificate layouts: the statistical one (``threshold`` a number in the metric's
    units; ``circuit.recovery`` with its lower confidence bound ``circuit.lower``) and the
    point one (``threshold: {"value": ...}``).
    """
    c = entry.circuit
    cert = c.certificate or {}
    test = (c.scores or {}).get("test") or {}
    circ = cert.get("circuit") or {}
    threshold = cert.get("threshold")
    return {
        "metric": cert.get("metric", test.get("metric")),
        "recovery": circ.get("recovery", test.get("recovery")),
        "recovery_lower": circ.get("lower", test.get("recovery_lower")),
        "epsilon_range": cert.get("epsilon_range"),
        "split": cert.get("split", "test" if test else None),
        "n": cert.get("n", test.get("n")),
        "accuracy": circ.get("accuracy", test.get("accuracy")),
        "ci": circ.get("ci", test.get("ci")),
        "margin_recovery": circ.get("margin_recovery", test.get("margin_recovery")),
        "full_accuracy": (cert.get("full") or {}).get("accuracy", test.get("full_accuracy")),
        "baseline_accuracy": (cert.get("baseline") or {}).get("accuracy"),
        "threshold": threshold.get("value") if isinstance(threshold, dict) else threshold,
        "verified": cert.get("verified"),
        "verdict": cert.get("verdict", None if not cert else "verified" if cert.get("verified") else "undecided"),
    }


def circuit_row(entry: Entry) -> dict[str, Any]:
    c = entry.circuit
    return {"label": entry.label, "task": c.task, "method": entry.method, "seed": c.seed,
            "size": len(c.heads), "n_heads_total": c.n_heads_total, "scorer": c.scorer,
            "ablation": c.ablation, "epsilon": c.epsilon, **recorded_scores(entry),
            "evaluations": c.evaluations, "wall_time_s": c.extra.get("wall_time_s"),
            "path": str(entry.path), "heads": list(c.heads)}


def _experiment_key(entry: Entry) -> str | None:
    exp = entry.experiment
    return json.dumps(exp, sort_keys=True) if exp else None


def pair_rows(entries: Sequence[Entry], rescored: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every unordered pair: sizes, Jaccard, precision/recall of a vs b, both test scores.

    ``comparable`` is true when both circuits carry the same ``config.experiment`` (same model,
    data, splits, scorer and ablation), i.e. their scores come from the same ``S(·)``.
    ``diff_ci`` (from :func:`rescore`) is a paired bootstrap interval of ``S(a) − S(b)``.
    """
    rows = []
    for a, b in itertools.combinations(entries, 2):
        sa, sb = recorded_scores(a), recorded_scores(b)
        key = _experiment_key(a)
        row = {"a": a.label, "b": b.label, "task_a": a.task, "task_b": b.task,
               "same_run": a.path.parent == b.path.parent,
               "comparable": key is not None and key == _experiment_key(b),
               **pair_stats(a.heads, b.heads),
               "test_accuracy_a": sa["accuracy"], "test_ci_a": sa["ci"],
               "test_accuracy_b": sb["accuracy"], "test_ci_b": sb["ci"],
               "evaluations_a": a.circuit.evaluations, "evaluations_b": b.circuit.evaluations,
               "wall_time_s_a": a.circuit.extra.get("wall_time_s"),
               "wall_time_s_b": b.circuit.extra.get("wall_time_s")}
        if rescored and a.label in rescored and b.label in rescored:
            row["rescored_diff"] = rescored.get("pairs", {}).get(f"{a.label}|{b.label}")
        rows.append(row)
    return rows


# --------------------------------------------------------------------------- cross analysis
def group(entries: Sequence[Entry]) -> dict[str, dict[str, list[Entry]]]:
    """``{method: {task: [entries, sorted by seed]}}``."""
    out: dict[str, dict[str, list[Entry]]] = defaultdict(lambda: defaultdict(list))
    for e in entries:
        out[e.method][e.task].append(e)
    return {m: {t: sorted(es, key=lambda e: (e.seed, e.label)) for t, es in sorted(ts.items())}
            for m, ts in sorted(out.items())}


def cross_analysis(entries: Sequence[Entry], n_layers: int, strong: float = 0.5,
                   super_: float = 0.9) -> dict[str, Any]:
    """Per method: per-task frequency, head classes, overlap matrices per level, layer
    distributions and seed stability (mean pairwise Jaccard across the task's circuits)."""
    out: dict[str, Any] = {"definitions": {"strong": strong, "super": super_, "levels": list(LEVELS)},
                           "methods": {}}
    for method, tasks in group(entries).items():
        freq = {t: head_frequency([e.heads for e in es]) for t, es in tasks.items()}
        classes = classify_heads(freq, strong, super_)
        per_task = {}
        for t, es in tasks.items():
            dist = mean_layer_distribution([e.heads for e in es], n_layers)
            fulls = [s for s in (recorded_scores(e)["full_accuracy"] for e in es) if s is not None]
            per_task[t] = {"n_circuits": len(es), "seeds": [e.seed for e in es],
                           "sizes": [len(e.heads) for e in es],
                           "mean_size": sum(len(e.heads) for e in es) / len(es),
                           "seed_stability": mean_pairwise_jaccard([e.heads for e in es]),
                           "full_accuracy": sum(fulls) / len(fulls) if fulls else None,
                           "frequency": freq[t], "layer_distribution": dist, "depth": depth_summary(dist),
                           "layer_counts": [layer_counts(e.heads, n_layers) for e in es]}
        out["methods"][method] = {
            "tasks": per_task, "classes": classes,
            "overlap": {lvl: overlap_matrix({t: classes[t][lvl] for t in tasks}) for lvl in LEVELS}}
    out["learned_vs_searched"] = same_run_agreement(entries)
    return out


def same_run_agreement(entries: Sequence[Entry]) -> dict[str, Any]:
    """Per task: mean Jaccard and precision/recall between circuits of the same run directory
    (e.g. ``learned`` vs ``warm``), keyed ``"<method a> vs <method b>"``."""
    by_run: dict[Any, list[Entry]] = defaultdict(list)
    for e in entries:
        by_run[e.path.parent].append(e)
    acc: dict[str, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for es in by_run.values():
        for a, b in itertools.combinations(sorted(es, key=lambda e: e.method), 2):
            acc[a.task][f"{a.method} vs {b.method}"].append(pair_stats(a.heads, b.heads))
    return {t: {k: {"n_runs": len(v), **{s: sum(r[s] for r in v) / len(v) for s in
                                          ("size_a", "size_b", "jaccard", "precision_a_vs_b", "recall_a_vs_b")}}
                for k, v in ks.items()} for t, ks in sorted(acc.items())}


# --------------------------------------------------------------------------- bootstrap + rescoring
def percentile_ci(samples: torch.Tensor, confidence: float = 0.95) -> list[float]:
    """Percentile interval of 1-D bootstrap samples, as a list for JSON."""
    return list(percentile_interval(samples, confidence))


def group_by_experiment(entries: Sequence[Entry], option: str) -> dict[str, list[Entry]]:
    """Entries grouped by their ``config.experiment`` (as a key), so each group is scored in one
    batched call; ``option`` names the flag in the error for a circuit file without one."""
    from kmshc.types import KmshcError
    groups: dict[str, list[Entry]] = defaultdict(list)
    for e in entries:
        key = _experiment_key(e)
        if key is None:
            raise KmshcError(f"{e.path}: {option} needs 'config.experiment' in the circuit file")
        groups[key].append(e)
    return groups


def rescore(entries: Sequence[Entry], n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Score every circuit on the test split of its own ``config.experiment`` (loads the model).

    Circuits with the same experiment are scored in one batched call, together with the full
    model and the empty set; pairs within a group get a paired bootstrap interval of the
    accuracy difference. Returns ``{label: {...}, "pairs": {"a|b": {...}}}``.
    """
    from kmshc.experiment import Experiment
    groups = group_by_experiment(entries, "--rescore")
    out: dict[str, Any] = {"pairs": {}}
    for key, es in groups.items():
        exp = Experiment.from_dict(json.loads(key), where=f"{es[0].path}: config.experiment")
        scorer = exp.scorer_for("test")
        L, H = exp.shape
        masks = torch.stack([torch.ones(L, H), torch.zeros(L, H)] + [e.circuit.mask(L, H) for e in es])
        res = scorer.outcomes(masks)
        boots = bootstrap_means(res.correct, n_boot, seed)
        for i, e in enumerate(es, start=2):
            out[e.label] = {"split": "test", "n": scorer.n, "accuracy": float(res.correct[i].mean()),
                            "ci": percentile_ci(boots[i]), "margin": float(res.margin[i].mean()),
                            "full_accuracy": float(res.correct[0].mean()), "full_ci": percentile_ci(boots[0]),
                            "empty_accuracy": float(res.correct[1].mean())}
        for (i, a), (j, b) in itertools.combinations(enumerate(es, start=2), 2):
            out["pairs"][f"{a.label}|{b.label}"] = {
                "diff": float(res.correct[i].mean() - res.correct[j].mean()),
                "ci": percentile_ci(boots[i] - boots[j])}
    return out
