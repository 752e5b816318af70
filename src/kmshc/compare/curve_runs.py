"""Faithfulness curves for saved circuits: rankings from run files, scored on each circuit's test split.

``kmshc compare --curves`` calls :func:`compare_curves`. Each circuit gives one ranking:

* a learned circuit: every head by the run's ``gates.json`` ranking (its ``order``, else ``log_alpha``, highest first);
* any other circuit (searched, peer): its own heads first, then the remaining heads; both parts
  by the same run's ``log_alpha`` where there is one, else in the file's (layer) order.

Circuits that share an experiment are scored on its test split together with one scorer, all
grid masks of one ranking in one batched call. The curve is computed on the mean log-prob
margin (MIB normalises a logit difference the same way) and on accuracy.

With an output folder, the raw scores are kept in ``<out>/curve_scores.json``, keyed by a hash of
the experiment, the ranking and the grid, and written after each experiment. A compare that adds
runs to a folder scores only the new rankings, and an interrupted one resumes; a changed ranking
or experiment gets a new key. (The key does not see the weights behind a model path: after
changing them, delete the file or pass ``--no_curve_cache``.)
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Sequence

from kmshc.compare import Entry
from kmshc.search.gates_file import load_gates, ranking_scores
from kmshc.compare.curves import Curve, complete_ranking, curve_from_scores, grid, ranking_from_gates, topk_masks
from kmshc.types import KmshcError, atomic_write_json

METRICS = ("margin", "accuracy")
CACHE_FILE = "curve_scores.json"


def recorded_shape(entries: Sequence[Entry]) -> tuple[tuple[int, int], Path] | None:
    """``((n_layers, n_heads), path)`` from the first ``gates.json`` beside one of ``entries``
    (``train.py`` and ``kmshc rank`` record the shape there), or ``None``: a compare whose curves
    are all cached then needs no model, which on a large one takes longer to load than the rest."""
    for e in entries:
        found = load_gates(e.path.parent)
        if found and isinstance(found[0].get("n_layers"), int) and isinstance(found[0].get("n_heads"), int):
            return (found[0]["n_layers"], found[0]["n_heads"]), found[1]
    return None


def entry_ranking(entry: Entry, n_layers: int, n_heads: int) -> list[str]:
    """All heads of the model, most important first, for ``entry`` (module doc)."""
    found = load_gates(entry.path.parent)
    order = (ranking_scores(*found) if found else None) or entry.gates
    if entry.method == "learned" and order:
        return ranking_from_gates(order, n_layers, n_heads)
    first = list(entry.circuit.heads)
    if order:  # within the circuit too, the run's log_alpha breaks the file's (layer) order
        first.sort(key=lambda h: -order.get(h, float("-inf")))
    return complete_ranking(first, n_layers, n_heads, rest_order=order)


def compare_curves(entries: Sequence[Entry], out: Path | None = None, *, cache: bool = True) -> dict[str, Any]:
    """Score every entry's top-k circuits on its test split; one plot per task and metric under ``out``.

    Returns ``{"curves": {metric: [Curve.to_dict(), ...]}, "skipped": [...], "images": [paths],
    "cached": n}``, ``n`` rankings whose scores came from ``out/curve_scores.json`` (module doc;
    ``cache=False`` neither reads nor writes it). A metric on which the full and the empty model
    score the same is skipped (nothing to normalise).
    """
    from kmshc.compare.tables import group_by_experiment
    groups = group_by_experiment(entries, "--curves")
    store = _ScoreCache(out / CACHE_FILE if out is not None and cache else None)
    curves, tasks, skipped = _score(groups, store)
    images = _plot(curves, tasks, out) if out is not None else []
    return {"curves": {m: [c.to_dict() for c in cs] for m, cs in curves.items()}, "skipped": skipped,
            "images": images, "cached": store.hits}


class _ScoreCache:
    """Raw curve scores ``{key: {"label", metric: [S(C_k) per k]}}`` in one JSON file (or nowhere)."""

    def __init__(self, path: Path | None) -> None:
        self.path, self.hits, self.data = path, 0, {}
        if path is not None and path.is_file():
            try:
                self.data = json.loads(path.read_text(encoding="utf-8"))
            except ValueError as e:
                raise KmshcError(f"{path}: not a curve-score cache ({e}); delete it or pass --no_curve_cache") from None
            if not isinstance(self.data, dict):
                raise KmshcError(f"{path}: expected a JSON object {{key: scores}}, got {type(self.data).__name__}; "
                                 "delete it or pass --no_curve_cache")

    @staticmethod
    def key(experiment_key: str, ranking: Sequence[str], ks: Sequence[int]) -> str:
        """``experiment_key`` is already canonical JSON (sorted keys), so it is hashed as it is."""
        blob = json.dumps([experiment_key, list(ranking), list(ks)])
        return hashlib.sha256(blob.encode()).hexdigest()

    def get(self, key: str) -> dict[str, list[float]] | None:
        hit = self.data.get(key)
        if hit is not None and all(isinstance(hit.get(m), list) for m in METRICS):
            self.hits += 1
            return hit
        return None

    def put(self, key: str, label: str, scores: dict[str, list[float]]) -> None:
        self.data[key] = {"label": label, **scores}

    def save(self) -> None:
        if self.path is not None:
            atomic_write_json(self.path, self.data)


def _score(groups: dict[str, list[Entry]], store: _ScoreCache) -> tuple[dict[str, list[Curve]], dict[str, str], list[str]]:
    """Curves per metric, each label's task, and the (label, metric)s skipped for having no gap."""
    from kmshc.experiment import Experiment
    curves: dict[str, list[Curve]] = {m: [] for m in METRICS}
    skipped: list[str] = []
    tasks: dict[str, str] = {}
    for key, es in groups.items():
        exp = Experiment.from_dict(json.loads(key), where=f"{es[0].path}: config.experiment")
        recorded = recorded_shape(es)
        (n_layers, n_heads), scorer, fresh = recorded[0] if recorded else exp.shape, None, False
        ks = grid(n_layers * n_heads)
        for e in es:
            tasks[e.label] = e.task
            ranking = entry_ranking(e, n_layers, n_heads)
            ckey = store.key(key, ranking, ks)
            scores = store.get(ckey)
            if scores is None:
                if scorer is None:  # built (model loaded) only when something is new
                    scorer = exp.scorer_for("test")
                    if recorded and exp.shape != recorded[0]:
                        raise KmshcError(f"{recorded[1]}: records {recorded[0][0]} layers x {recorded[0][1]} heads, "
                                         f"but {exp.model} has {exp.shape[0]} x {exp.shape[1]}")
                o = scorer.outcomes(topk_masks(ranking, ks, n_layers, n_heads))
                scores = {"margin": [float(x) for x in o.margin.mean(1)], "accuracy": [float(x) for x in o.accuracy]}
                store.put(ckey, e.label, scores)
                fresh = True
            for m in METRICS:
                v = scores[m]
                if v[-1] == v[0]:  # S(M) = S(∅): nothing to normalise by on this metric
                    skipped.append(f"{e.label} ({m}): S(M) = S(∅) = {v[0]:.4f}")
                    continue
                curves[m].append(curve_from_scores(e.label, n_layers * n_heads, ks, v, full=v[-1], empty=v[0]))
        if fresh:
            store.save()  # after each experiment: an interrupted compare keeps what it scored
    return curves, tasks, skipped


def _plot(curves: dict[str, list[Curve]], tasks: dict[str, str], out: Path) -> list[Path]:
    from kmshc.compare.plots import faithfulness_curves
    out.mkdir(parents=True, exist_ok=True)
    images = []
    for m in METRICS:
        for task in sorted(set(tasks.values())):
            cs = [c for c in curves[m] if tasks[c.label] == task]
            if not cs:
                continue
            path = out / f"faithfulness_{task}_{m}.png"
            faithfulness_curves(cs, path, title=f"{task}: top-k circuits of each ranking ({m})")
            images.append(path)
    return images
