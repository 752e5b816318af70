"""``kmshc rank``: rank heads without training and write a ``gates.json`` the warm search starts from.

``log_alpha`` carries the method's scores (the warm search's order for restoring and deleting
heads); ``gate`` is 1 for the starting set and 0 elsewhere: the coverage rule of
:func:`kmshc.attribution.starting_set` for ``attribution`` and ``integrated_gradients``, the
selected heads for ``forward_selection`` (:mod:`kmshc.forward_selection`).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from kmshc.engine.ablation import DEFAULT_ABLATION
from kmshc.attribution import METHODS as DERIVATIVES
from kmshc.attribution import Attribution, head_attribution, starting_set
from kmshc.engine.cost import CostRecord
from kmshc.types import KmshcError, atomic_write_json, ensure_writable_dir

METHODS = (*DERIVATIVES, "forward_selection")


@dataclass(frozen=True)
class RankSettings:
    """How ``kmshc rank`` ranks (the defaults of the verb and of :func:`kmshc.api.rank_heads`):
    ``method``; ``steps`` (integrated gradients' points on the gate path); ``coverage`` (the
    starting-set rule of the derivative methods); ``target``, ``per_round``, ``max_heads``
    (forward selection, :func:`kmshc.forward_selection.forward_selection`)."""

    method: str = "attribution"
    steps: int = 5
    coverage: float = 0.9
    target: float = 0.9
    per_round: int = 1
    max_heads: int = 64


def rank(scorer, split: str, settings: RankSettings,
         on_round: Callable[[int, float], None] | None = None) -> tuple[Attribution, list[str], dict[str, Any]]:
    """``(scores, starting set, start rule)`` of ``settings.method`` on ``scorer``'s data."""
    if settings.method not in METHODS:
        raise KmshcError(f"method: expected one of {', '.join(METHODS)}, got {settings.method!r}")
    if settings.method == "forward_selection":
        from kmshc.forward_selection import forward_selection
        result = forward_selection(scorer, split, target=settings.target, per_round=settings.per_round,
                                   max_heads=settings.max_heads, on_round=on_round)
        return result, list(result.start), {
            "rule": "forward_selection", "target": settings.target, "per_round": settings.per_round,
            "max_heads": settings.max_heads, "reached": result.reached,
            "recovery": [round(r, 6) for r in result.recovery]}
    result = head_attribution(scorer, split, method=settings.method, steps=settings.steps)
    return result, starting_set(result.named(), settings.coverage), {"rule": "coverage", "coverage": settings.coverage}


def gates_record(exp, result: Attribution, start: list[str] | tuple[str, ...], start_rule: dict[str, Any],
                 wall_time_s: float) -> dict[str, Any]:
    """The ``gates.json`` object: train.py's format (``experiment`` + ``heads: {name: {gate,
    log_alpha}}``) with ``log_alpha`` = the method's score, plus the method, its start rule
    (with the starting set's ``size``) and its cost."""
    named = result.named()
    start = set(start)
    n_layers, n_heads = result.scores.shape
    return {"model": exp.model, "task": exp.task_name, "n_layers": n_layers, "n_heads": n_heads, "tau": 0.5,
            "experiment": exp.to_dict(), "method": result.method, "steps": result.steps, "split": result.split, "n": result.n,
            "metric": "mean margin", "start_rule": {**start_rule, "size": len(start)},
            "heads": {h: {"log_alpha": a, "gate": 1.0 if h in start else 0.0} for h, a in named.items()},
            "cost": result.cost.to_dict(), "wall_time_s": round(wall_time_s, 3)}


@dataclass(frozen=True)
class RankRecord:
    """What a rank run's ``gates.json`` says about its own run: method, examples, starting-set size,
    cost, wall time and ``steps``: the points on the gate path (1 for plain attribution, and where
    a file does not record it) or, for forward selection, the rounds."""

    method: str
    n: int
    start_size: int
    cost: CostRecord
    wall_time_s: float
    steps: int = 1


def read_rank_record(run_dir: str | Path) -> RankRecord:
    """The :class:`RankRecord` of ``run_dir/gates.json``; a training run's gates (no ``method``) are refused."""
    path = Path(run_dir) / "gates.json"
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise KmshcError(f"{path}: not found; expected the gates.json of a `kmshc rank` run") from None
    except (OSError, ValueError) as e:
        raise KmshcError(f"{path}: cannot read it ({e})") from None
    if not isinstance(d, dict) or d.get("method") not in METHODS:
        raise KmshcError(f"{path}: field 'method' must be one of {', '.join(METHODS)} (a `kmshc rank` run)")
    try:
        return RankRecord(method=d["method"], n=int(d["n"]), start_size=int(d["start_rule"]["size"]),
                          cost=CostRecord.from_dict(d["cost"], where=f"{path}: field 'cost'"),
                          wall_time_s=float(d["wall_time_s"]), steps=int(d.get("steps", 1)))
    except (KeyError, TypeError, ValueError) as e:
        raise KmshcError(f"{path}: field {e} missing or malformed") from None


def rank_experiment(args: argparse.Namespace):
    """The experiment to rank on: an earlier run's (``--experiment_from``, so the ranking and that
    run share model, task, splits and ablation) or one built from the flags."""
    from kmshc.experiment import Experiment
    from kmshc.search.rundir import read_gates
    if args.experiment_from:
        if args.task or args.data:
            raise KmshcError("--experiment_from takes the task from that run; drop --task/--data")
        return read_gates(Path(args.experiment_from))[0]
    if not args.task:
        raise KmshcError("rank: pass --task (with its data), or --experiment_from RUN to reuse a run's experiment")
    return Experiment(model=args.model, dtype=args.dtype, task=args.task, data=args.data, labels=args.labels,
                      n=args.n, limit=args.limit, seed=args.seed, scorer=args.scorer, ablation=args.ablation,
                      per_position=args.per_position, batch_size=args.batch_size)


def run_rank(args: argparse.Namespace) -> dict[str, Any]:
    """``kmshc rank``: build the experiment, rank its heads, write ``<runs_dir>/<name>/gates.json``."""
    out = Path(args.runs_dir) / (args.name or f"rank-{args.method}")
    if (out / "gates.json").exists() and not args.overwrite:
        raise KmshcError(f"{out / 'gates.json'} exists; pass --overwrite to replace it or choose another --name")
    ensure_writable_dir(out, "run directory")  # before the model loads: fail in seconds
    exp = rank_experiment(args)
    scorer = exp.scorer_for(args.split)  # mean-ablation values are fitted here, outside the count
    settings = RankSettings(method=args.method, steps=args.steps, coverage=args.coverage, target=args.target,
                            per_round=args.per_round, max_heads=args.max_heads)

    def progress(size: int, recovery: float) -> None:
        print(f"forward selection: {size} heads, recovery {recovery:.3f} on {args.split} (target {args.target})",
              file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    result, start, rule = rank(scorer, args.split, settings, on_round=progress)
    record = gates_record(exp, result, start, rule, time.perf_counter() - t0)
    atomic_write_json(out / "gates.json", record)
    top = sorted(record["heads"], key=lambda h: (-record["heads"][h]["log_alpha"], h))[:args.top]
    return {"run_dir": str(out), "method": args.method, "split": args.split, "n": result.n,
            "start_size": record["start_rule"]["size"], "example_forwards": record["cost"]["example_forwards"],
            "wall_time_s": record["wall_time_s"],
            "top": [[h, round(record["heads"][h]["log_alpha"], 6)] for h in top]}


def add_rank_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``kmshc rank``."""
    p = sub.add_parser("rank", help="rank heads without training (attribution, integrated gradients, forward "
                                    "selection) and write a warm-startable gates.json")
    d = RankSettings()
    p.add_argument("--method", default=d.method, choices=METHODS,
                   help="attribution: the derivative at the full model (one forward+backward pass per example); "
                        "integrated_gradients: its average over --steps points from all heads ablated to none; "
                        "forward_selection: grow a circuit from no head, re-taking the derivative at it each round")
    p.add_argument("--steps", type=int, default=d.steps,
                   help="integrated_gradients: points on the gate path (each costs one forward+backward pass)")
    p.add_argument("--target", type=float, default=d.target,
                   help="forward_selection: stop once the circuit recovers this fraction of the margin on the "
                        "ranking split (use the search's epsilon)")
    p.add_argument("--per_round", type=int, default=d.per_round, help="forward_selection: heads added per round")
    p.add_argument("--max_heads", type=int, default=d.max_heads, help="forward_selection: stop at this many heads")
    p.add_argument("--model", default="smollm2-135m")
    from kmshc.tasks import TASKS
    p.add_argument("--task", choices=TASKS)
    p.add_argument("--experiment_from", metavar="RUN",
                   help="rank on the experiment of an earlier run (its gates.json: model, task, splits, ablation, "
                        "scorer, dtype, batch size), e.g. the training run whose learned gates this ranking rivals; "
                        "the experiment flags below are then not used")
    p.add_argument("--data", help="jsonl file for --task blimp / labels")
    p.add_argument("--labels", nargs="+", help="label words for --task labels, e.g. ' True' ' False'")
    p.add_argument("--n", type=int, help="number of generated items (generated tasks)")
    p.add_argument("--limit", type=int, help="use at most N items (taken after a seeded shuffle)")
    p.add_argument("--split", default="train", choices=["train", "val", "test"],
                   help="the seeded 60/20/20 split to rank on (default: train, which the search never scores)")
    p.add_argument("--ablation", default=DEFAULT_ABLATION, choices=["zero", "mean", "resample"])
    p.add_argument("--per_position", action="store_true", help="mean ablation per position")
    p.add_argument("--scorer", default="pair_logprob", choices=["pair_logprob", "label_tokens"])
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "auto"])
    p.add_argument("--batch_size", type=int, default=32, help="examples per forward+backward pass")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--coverage", type=float, default=d.coverage,
                   help="attribution, integrated_gradients: the starting set is the fewest top heads holding this "
                        "fraction of the positive scores")
    p.add_argument("--runs_dir", default="runs")
    p.add_argument("--name", help="run folder under --runs_dir (default: rank-<method>)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing gates.json")
    p.add_argument("--top", type=int, default=10, help="heads listed in the printed summary")
    p.set_defaults(func=run_rank)
