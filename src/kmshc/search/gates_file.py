"""``gates.json``: the gates a learning run (``kmshc train``) or a ranking run (``kmshc rank``)
hands to the warm search. This module writes and reads it; the other modules call it.

The file (``version`` 2)::

    {"version": 2, "model", "task", "n_layers", "n_heads", "gate_threshold",
     "experiment": {...},                      # Experiment.to_dict(): what the gates were fitted on
     "heads": {"L0H0": {"log_alpha": float, "gate": float}, ...},
     "order": ["L3H1", ...],                   # optional: the run's ranking, most important first
     "cost": {...}, ...}                       # the run's own fields (a ranking's method, start rule)

The ranking the warm search and the curves follow is ``order`` where the file has one (a
training run's regularisation path writes it; heads it leaves out follow by ``log_alpha``),
else ``log_alpha`` (:func:`ranking_scores`).

A file without ``version`` is version 1, which named the gate threshold ``tau``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from kmshc.experiment import Experiment
from kmshc.types import KmshcError, atomic_write_json, head_name

NAME = "gates.json"
VERSION = 2


def gates_record(experiment: Experiment, log_alpha: torch.Tensor, gates: torch.Tensor, *, gate_threshold: float,
                 **run: Any) -> dict[str, Any]:
    """The file's object: ``log_alpha`` and ``gates`` ``[L, H]`` by head name, and ``run``'s fields."""
    n_layers, n_heads = log_alpha.shape
    heads = {head_name(l, h): {"log_alpha": float(log_alpha[l, h]), "gate": float(gates[l, h])}
             for l in range(n_layers) for h in range(n_heads)}
    return {"version": VERSION, "model": experiment.model, "task": experiment.task_name, "n_layers": n_layers,
            "n_heads": n_heads, "gate_threshold": gate_threshold, "experiment": experiment.to_dict(),
            "heads": heads, **run}


def write_gates(run_dir: str | Path, record: dict[str, Any]) -> Path:
    """Write ``run_dir/gates.json`` atomically; returns its path."""
    path = Path(run_dir) / NAME
    atomic_write_json(path, record)
    return path


def _upgrade(d: dict[str, Any]) -> dict[str, Any]:
    if d.get("version", 1) == 1 and "tau" in d:
        d = {k: v for k, v in d.items() if k != "tau"} | {"gate_threshold": d["tau"]}
    return {**d, "version": VERSION}


def load_gates(run_dir: str | Path, missing: str | None = None) -> tuple[dict[str, Any], Path] | None:
    """The parsed ``run_dir/gates.json`` (in the current version) and its path; when the run has
    none, ``None``, or with ``missing`` a :class:`KmshcError` that ends with it."""
    path = Path(run_dir) / NAME
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        if missing is None:
            return None
        raise KmshcError(f"{path}: not found; {missing}") from None
    except (OSError, ValueError) as e:
        raise KmshcError(f"{path}: cannot read gates ({e})") from None
    if not isinstance(d, dict):
        raise KmshcError(f"{path}: expected a JSON object, got {type(d).__name__}")
    if not isinstance(d.get("version", 1), int) or d.get("version", 1) > VERSION:
        raise KmshcError(f"{path}: version {d.get('version')!r}; this kmshc reads versions up to {VERSION}")
    return _upgrade(d), path


def ranking_scores(d: dict[str, Any], path: Path | str = NAME) -> dict[str, float] | None:
    """``{head: score}``, higher = more important, of a parsed gates file ``d``: its ``order`` first,
    then the other heads by ``log_alpha``; ``None`` when not every head has a ``log_alpha``."""
    heads = d["heads"]
    log_alpha = {h: float(v["log_alpha"]) for h, v in heads.items() if isinstance(v, dict) and "log_alpha" in v}
    if len(log_alpha) != len(heads):
        return None
    order = d.get("order") or []
    if not isinstance(order, list) or not set(order) <= set(heads):
        raise KmshcError(f"{path}: field 'order' must list head names of 'heads'")
    if not order:
        return log_alpha
    return order_scores(list(order) + sorted(set(heads) - set(order), key=lambda h: (-log_alpha[h], h)))


def order_scores(ranked: list[str]) -> dict[str, float]:
    """``{head: score}`` of a ranking, most important first: ``len(ranked)`` down to 1."""
    return {h: float(len(ranked) - i) for i, h in enumerate(ranked)}


def read_gates(run_dir: str | Path) -> tuple[Experiment, dict[str, float], dict[str, float] | None]:
    """``(experiment, {head name: gate}, {head name: rank score} or None)`` for the warm search: the
    scores of :func:`ranking_scores` rank heads whose gates saturate at 1.0 (``None`` without a
    ``log_alpha`` for every head)."""
    d, path = load_gates(run_dir, "warm mode needs a finished train.py run (from_run)")
    for key in ("experiment", "heads"):
        if not isinstance(d.get(key), dict):
            raise KmshcError(f"{path}: field '{key}' missing or not an object")
    gates = {}
    for name, v in d["heads"].items():
        if not isinstance(v, dict) or not isinstance(v.get("gate"), (int, float)):
            raise KmshcError(f"{path}: field 'heads.{name}.gate' must be a number")
        gates[name] = float(v["gate"])
        if "log_alpha" in v and not isinstance(v["log_alpha"], (int, float)):
            raise KmshcError(f"{path}: field 'heads.{name}.log_alpha' must be a number")
    ranks = ranking_scores(d, path)
    return Experiment.from_dict(d["experiment"], where=f"{path}: field 'experiment'"), gates, ranks


def head_values(run_dir: str | Path, field: str) -> dict[str, float] | None:
    """``{head: heads[head][field]}`` (``field``: ``gate`` or ``log_alpha``), or ``None`` when the
    run has no gates.json."""
    found = load_gates(run_dir)
    if found is None:
        return None
    try:
        return {h: float(v[field]) for h, v in found[0]["heads"].items()}
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise KmshcError(f"{found[1]}: expected {{'heads': {{'L0H0': {{'{field}': float}}, ...}}}} ({e!r})") from None
