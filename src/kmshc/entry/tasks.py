"""``kmshc tasks``: which tasks can this model do, and which do its heads matter for?

For every built-in generated task and every ``--data`` BLiMP file, the survey scores the full
model and the model with every head ablated (zero, mean and, where the task defines them,
counterfactual), reporting accuracy and the mean log-probability margin of each, the gap
``full − mean-ablated`` and a verdict. A task is *usable* for circuit discovery when the model
does it (full accuracy ≥ ``min_full``, default 0.8) and its heads matter for it (the gap is at
least ``min_gap``, default 0.2): a circuit then has a gap to recover.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

import torch

from kmshc.tasks import GENERATED_TASKS, load_blimp_jsonl, make_task, split_task
from kmshc.tasks.base import Task, merge_splits
from kmshc.types import atomic_write_text

MIN_FULL, MIN_GAP = 0.8, 0.2


@dataclass(frozen=True)
class Score:
    """Accuracy and mean margin (log p(good) − log p(bad)) of one configuration."""

    accuracy: float
    margin: float


@dataclass(frozen=True)
class TaskRow:
    """One task's survey line; ``counterfactual`` is ``None`` where the task defines none."""

    task: str
    n: int
    full: Score
    zero: Score
    mean: Score
    counterfactual: Score | None

    @property
    def gap(self) -> float:
        return self.full.accuracy - self.mean.accuracy


def verdict(full: float, mean: float, min_full: float = MIN_FULL, min_gap: float = MIN_GAP) -> str:
    """``usable`` when ``full >= min_full`` and ``full − mean >= min_gap``; otherwise the reason."""
    if full < min_full:
        return f"no: the model fails it (full < {min_full:g})"
    if full - mean < min_gap:
        return f"no: heads barely matter (gap < {min_gap:g})"
    return "usable"


def survey_task(model, tok, task: Task, *, limit: int | None = None, seed: int = 0, progress=None) -> TaskRow:
    """Score ``task`` (every item left after ``limit``; mean ablation averages over its train split).

    The full and the mean-ablated model go through one batched call; zero and counterfactual
    ablation each need their own ablation values, hence their own call.
    """
    from kmshc.engine.encoding import encode
    from kmshc.engine.scoring import Scorer
    splits = split_task(task, seed=seed, limit=limit)
    items = merge_splits(task, splits)
    full_and_none = None
    results: dict[str, Score] = {}
    # Counterfactuals that do not align under this tokenizer are left out, as for tasks without any.
    patchable = task.has_counterfactuals and encode(items, tok).cf_seqs is not None
    kinds = ["mean", "zero"] + (["counterfactual"] if patchable else [])
    for kind in kinds:
        scorer = Scorer(model, tok, items, ablation=kind, train=splits["train"], seed=seed)
        none = torch.zeros(scorer.shape)
        masks = torch.stack([scorer.full_mask(), none]) if full_and_none is None else none[None]
        out = scorer.outcomes(masks)
        scores = [Score(float(a), float(m)) for a, m in zip(out.accuracy, out.margin.mean(1))]
        if full_and_none is None:
            full_and_none = scores
            results["full"] = scores[0]
        results[kind] = scores[-1]
        if progress is not None:
            progress.update(1)
    if progress is not None and len(kinds) < steps_for(task):
        progress.update(steps_for(task) - len(kinds))
    return TaskRow(task.name, len(items), results["full"], results["zero"], results["mean"],
                   results.get("counterfactual"))


def steps_for(task: Task) -> int:
    """Scorer calls the survey plans for ``task`` (for the progress bar)."""
    return 3 if task.has_counterfactuals else 2


def markdown(rows: list[TaskRow], min_full: float = MIN_FULL, min_gap: float = MIN_GAP) -> str:
    """The survey as a markdown table: accuracy (mean margin) per configuration, gap and verdict."""
    def cell(s: Score | None) -> str:
        return "–" if s is None else f"{s.accuracy:.3f} ({s.margin:+.2f})"

    lines = ["| task | n | full | all heads zero | all heads mean | all heads counterfactual | gap (full − mean) "
             "| usable? |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.task} | {r.n} | {cell(r.full)} | {cell(r.zero)} | {cell(r.mean)} | "
                     f"{cell(r.counterfactual)} | {r.gap:+.3f} | {verdict(r.full.accuracy, r.mean.accuracy, min_full, min_gap)} |")
    return "\n".join(lines) + "\n\nCells: accuracy (mean log-probability margin, log p(good) − log p(bad)).\n"


def run_tasks(args: argparse.Namespace) -> None:
    from tqdm import tqdm

    from kmshc.engine.models import load_model
    from kmshc.tasks.defects import screen
    tasks = [make_task(name, seed=args.seed) for name in args.tasks]
    tasks += [load_blimp_jsonl(path) for path in args.data or []]
    model, tok = load_model(args.model, dtype=args.dtype)
    tasks = [screen(t, lambda: tok) for t in tasks]  # as `kmshc score` does: defective pairs left out before the split
    steps = sum(steps_for(t) for t in tasks)
    rows = []
    with tqdm(total=steps, desc="tasks", file=sys.stderr, disable=args.no_progress) as bar:
        for task in tasks:
            bar.set_postfix_str(task.name)
            rows.append(survey_task(model, tok, task, limit=args.limit, seed=args.seed, progress=bar))
    table = markdown(rows, args.min_full, args.min_gap)
    print(table, end="")
    if args.out:
        atomic_write_text(args.out, table)


def add_tasks_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``kmshc tasks``."""
    from kmshc.entry.experiment_args import add_experiment_arguments
    p = sub.add_parser("tasks", help="survey tasks: full vs all-heads-ablated accuracy and margin, and a verdict")
    add_experiment_arguments(p, ["model"])
    p.add_argument("--tasks", nargs="*", default=list(GENERATED_TASKS), choices=list(GENERATED_TASKS),
                   help="built-in generated tasks to survey (default: all)")
    p.add_argument("--data", nargs="+", action="extend", metavar="FILE",
                   help="BLiMP jsonl files to survey too (repeatable)")
    add_experiment_arguments(p, ["limit", "seed", "dtype"],
                             limit={"help": "use at most N items per task (taken after a seeded shuffle)"})
    p.add_argument("--min_full", type=float, default=MIN_FULL, help="usable: full accuracy at least this")
    p.add_argument("--min_gap", type=float, default=MIN_GAP, help="usable: full − mean-ablated accuracy at least this")
    p.add_argument("--out", help="also write the markdown table to this file (atomically)")
    p.add_argument("--no_progress", action="store_true", help="no progress bar on stderr")
    p.set_defaults(func=run_tasks)
