"""``kmshc rank``: rank heads without training and write a warm-startable ``gates.json``
(the ranking itself is :mod:`kmshc.rank`)."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from kmshc.entry.experiment_args import add_experiment_arguments
from kmshc.rank.run import METHODS, RankSettings, gates_record, rank
from kmshc.search.gates_file import NAME as GATES
from kmshc.search.gates_file import write_gates
from kmshc.types import KmshcError, ensure_writable_dir

# the Experiment fields `kmshc rank` takes as flags
RANK_FIELDS = ["model", "task", "data", "labels", "n", "limit", "ablation", "per_position", "scorer", "dtype",
               "batch_size", "seed"]


def rank_experiment(args: argparse.Namespace):
    """The experiment to rank on: an earlier run's (``--experiment_from``, so the ranking and that
    run share model, task, splits and ablation) or one built from the flags."""
    from kmshc.experiment import Experiment
    from kmshc.search.gates_file import read_gates
    if args.experiment_from:
        if args.task or args.data:
            raise KmshcError("--experiment_from takes the task from that run; drop --task/--data")
        return read_gates(Path(args.experiment_from))[0]
    if not args.task:
        raise KmshcError("rank: pass --task (with its data), or --experiment_from RUN to reuse a run's experiment")
    return Experiment(**{name: getattr(args, name) for name in RANK_FIELDS})


def run_rank(args: argparse.Namespace) -> dict[str, Any]:
    """``kmshc rank``: build the experiment, rank its heads, write ``<runs_dir>/<name>/gates.json``."""
    out = Path(args.runs_dir) / (args.name or f"rank-{args.method}")
    if (out / GATES).exists() and not args.overwrite:
        raise KmshcError(f"{out / GATES} exists; pass --overwrite to replace it or choose another --name")
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
    write_gates(out, record)
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
    add_experiment_arguments(p, ["model", "task"], task={"default": None})
    p.add_argument("--experiment_from", metavar="RUN",
                   help="rank on the experiment of an earlier run (its gates.json: model, task, splits, ablation, "
                        "scorer, dtype, batch size), e.g. the training run whose learned gates this ranking rivals; "
                        "the experiment flags below are then not used")
    add_experiment_arguments(p, ["data", "labels", "n", "limit"])
    p.add_argument("--split", default="train", choices=["train", "val", "test"],
                   help="the seeded 60/20/20 split to rank on (default: train, which the search never scores)")
    add_experiment_arguments(p, RANK_FIELDS[6:], ablation={"choices": ["zero", "mean", "resample"]},
                             scorer={"choices": ["pair_logprob", "label_tokens"]},
                             batch_size={"help": "examples per forward+backward pass"})
    p.add_argument("--coverage", type=float, default=d.coverage,
                   help="attribution, integrated_gradients: the starting set is the fewest top heads holding this "
                        "fraction of the positive scores")
    p.add_argument("--runs_dir", default="runs")
    p.add_argument("--name", help="run folder under --runs_dir (default: rank-<method>)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing gates.json")
    p.add_argument("--top", type=int, default=10, help="heads listed in the printed summary")
    p.set_defaults(func=run_rank)
