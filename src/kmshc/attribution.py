"""Attribution ranking: every head's first-order effect on the task metric, without training.

For head ``h`` with output ``z_h`` (its slice of the attention output projection's input) and
ablation value ``a_h``, the metric ``m`` (the mean margin: log p(good) − log p(bad) for pairs,
the gold label logit minus the best other for labels) changes, to first order, by

    A(h) = m(all heads) − m(h ablated) ≈ Σ_positions (z_h − a_h) · ∂m/∂z_h.

This is exactly ``∂m/∂g_h`` at ``g = 1`` for the gate of :func:`kmshc.hooks.gated`
(``out = a + g·(z − a)``), so one forward and one backward pass per batch, with every gate held
at 1, gives all heads at once: attribution patching (Nanda, 2023), i.e. EAP (Syed et al., 2023)
on nodes. ``A(h) > 0``: the head helps the task; ``A(h) < 0``: ablating it helps.

``method="integrated_gradients"`` averages the same derivative over ``steps`` points of the path
on which every gate goes from 0 (all heads ablated) to 1 together, ``g = (k − ½)/steps``:
integrated gradients (Sundararajan et al., 2017) on the gates, as in EAP-IG (Hanna et al., 2024).
The scores then add up to ``m(all heads) − m(no head)`` (up to the midpoint rule's error), and a
head that matters only once many others are ablated is no longer scored near 0. ``steps`` times
the cost of plain attribution.

A rank run writes a ``gates.json`` that ``search.py --mode warm`` starts from unchanged:
``log_alpha`` carries ``A(h)`` (the warm search's order), ``gate`` is 1 for the starting set of
:func:`starting_set` and 0 elsewhere.
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from kmshc.cost import CostRecord, RowCount
from kmshc.hooks import count_rows
from kmshc.scoring import Scorer
from kmshc.types import KmshcError, atomic_write_json, ensure_writable_dir, head_name

METHODS = ("attribution", "integrated_gradients")


@dataclass(frozen=True)
class Attribution:
    """``scores`` ``[L, H]`` (float64): ``A(h)`` averaged over the ``n`` examples of ``split``;
    ``cost``: the rows the forward and backward passes ran (:mod:`kmshc.cost`); ``method`` and
    ``steps``: how (``steps`` points on the gate path; 1 for plain attribution)."""

    scores: torch.Tensor
    n: int
    split: str
    cost: RowCount
    method: str = "attribution"
    steps: int = 1

    def named(self) -> dict[str, float]:
        """``{"L{l}H{h}": A(h)}`` in layer-major order."""
        return {head_name(l, h): float(self.scores[l, h])
                for l in range(self.scores.shape[0]) for h in range(self.scores.shape[1])}


def gate_path(method: str, steps: int) -> torch.Tensor:
    """The gate values ``[P]`` at which the derivative is taken: ``[1]`` for plain attribution,
    the ``steps`` midpoints ``(k − ½)/steps`` of ``[0, 1]`` for integrated gradients."""
    if method not in METHODS:
        raise KmshcError(f"method: expected one of {', '.join(METHODS)}, got {method!r}")
    if method == "attribution":
        return torch.ones(1)
    if steps < 1:
        raise KmshcError(f"steps: expected at least 1 point on the integration path, got {steps}")
    return (torch.arange(steps, dtype=torch.float32) + 0.5) / steps


def head_attribution(scorer: Scorer, split: str = "train", *, method: str = "attribution",
                     steps: int = 5) -> Attribution:
    """``A(h)`` for every head on ``scorer``'s data (named ``split`` in the result).

    The scorer supplies the model, the ablation values and the margin (its shared-token rule
    included); the probe scorer has no differentiable margin and is refused. One forward and one
    backward pass per batch of ``scorer.batch_size`` examples and point of :func:`gate_path`
    (the points of a batch run stacked, as masks are).
    """
    n_layers, n_heads = scorer.shape
    alphas = gate_path(method, steps)  # [P]
    total = torch.zeros(n_layers, n_heads, dtype=torch.float64)
    cost = RowCount(n_layers, scorer.data.rows_per_example)
    with torch.enable_grad(), count_rows(scorer.model, cost):
        for batch in scorer.data.batches(scorer.batch_size):
            gates = alphas[:, None, None].expand(-1, n_layers, n_heads).clone().requires_grad_(True)  # [P, L, H]
            margin = scorer.batch_margins(batch, gates)  # [P, b]
            (grad,) = torch.autograd.grad(margin.sum(), gates)  # not .backward(): frozen weights get no .grad
            total += grad.double().mean(0).cpu()  # the midpoint rule's average over the path
    return Attribution(total / scorer.data.n, scorer.data.n, split, cost, method, len(alphas))


def starting_set(scores: dict[str, float], coverage: float = 0.9) -> list[str]:
    """The fewest heads, best first, whose positive ``A(h)`` sum to ``coverage`` of all positive ``A(h)``.

    Heads with ``A(h) ≤ 0`` never enter: to first order, ablating them does not hurt. The set is
    a start only: the warm search adds heads back in ``A(h)`` order while it scores below ``U``,
    then deletes what it does not need. Ties are broken by head name.
    """
    if not 0 < coverage <= 1:
        raise KmshcError(f"coverage: expected a fraction in (0, 1], got {coverage}")
    ranked = [h for h in sorted(scores, key=lambda h: (-scores[h], h)) if scores[h] > 0]
    total, chosen, acc = sum(scores[h] for h in ranked), [], 0.0
    for h in ranked:
        if acc >= coverage * total:
            break
        chosen.append(h)
        acc += scores[h]
    return chosen


def gates_record(exp, result: Attribution, coverage: float, wall_time_s: float) -> dict[str, Any]:
    """The ``gates.json`` object: train.py's format (``experiment`` + ``heads: {name: {gate,
    log_alpha}}``) with ``log_alpha`` = ``A(h)``, plus the method, its rule and its cost."""
    named = result.named()
    start = set(starting_set(named, coverage))
    n_layers, n_heads = result.scores.shape
    return {"model": exp.model, "task": exp.task_name, "n_layers": n_layers, "n_heads": n_heads, "tau": 0.5,
            "experiment": exp.to_dict(), "method": result.method, "steps": result.steps, "split": result.split, "n": result.n,
            "metric": "mean margin", "start_rule": {"coverage": coverage, "size": len(start)},
            "heads": {h: {"log_alpha": a, "gate": 1.0 if h in start else 0.0} for h, a in named.items()},
            "cost": result.cost.to_dict(), "wall_time_s": round(wall_time_s, 3)}


@dataclass(frozen=True)
class RankRecord:
    """What a rank run's ``gates.json`` says about its own run: method, examples, starting-set size,
    cost, wall time and points on the gate path (1 for plain attribution and for older files)."""

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
    if args.method not in METHODS:  # argparse's choices already say so; kept for API callers
        raise KmshcError(f"method: expected one of {', '.join(METHODS)}, got {args.method!r}")
    out = Path(args.runs_dir) / (args.name or f"rank-{args.method}")
    if (out / "gates.json").exists() and not args.overwrite:
        raise KmshcError(f"{out / 'gates.json'} exists; pass --overwrite to replace it or choose another --name")
    ensure_writable_dir(out, "run directory")  # before the model loads: fail in seconds
    exp = rank_experiment(args)
    scorer = exp.scorer_for(args.split)  # mean-ablation values are fitted here, outside the count
    t0 = time.perf_counter()
    result = head_attribution(scorer, args.split, method=args.method, steps=args.steps)
    record = gates_record(exp, result, args.coverage, time.perf_counter() - t0)
    atomic_write_json(out / "gates.json", record)
    top = sorted(record["heads"], key=lambda h: (-record["heads"][h]["log_alpha"], h))[:args.top]
    return {"run_dir": str(out), "method": args.method, "split": args.split, "n": result.n,
            "start_size": record["start_rule"]["size"], "example_forwards": record["cost"]["example_forwards"],
            "wall_time_s": record["wall_time_s"],
            "top": [[h, round(record["heads"][h]["log_alpha"], 6)] for h in top]}


def add_rank_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``kmshc rank``."""
    p = sub.add_parser("rank", help="rank heads without training (attribution) and write a warm-startable gates.json")
    p.add_argument("--method", default="attribution", choices=METHODS,
                   help="attribution: the derivative at the full model (one forward+backward pass per example); "
                        "integrated_gradients: its average over --steps points from all heads ablated to none")
    p.add_argument("--steps", type=int, default=5,
                   help="integrated_gradients: points on the gate path (each costs one forward+backward pass)")
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
    p.add_argument("--ablation", default="mean", choices=["zero", "mean", "resample"])
    p.add_argument("--per_position", action="store_true", help="mean ablation per position")
    p.add_argument("--scorer", default="pair_logprob", choices=["pair_logprob", "label_tokens"])
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "auto"])
    p.add_argument("--batch_size", type=int, default=32, help="examples per forward+backward pass")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--coverage", type=float, default=0.9,
                   help="starting set: the fewest top heads holding this fraction of the positive attribution")
    p.add_argument("--runs_dir", default="runs")
    p.add_argument("--name", help="run folder under --runs_dir (default: rank-<method>)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing gates.json")
    p.add_argument("--top", type=int, default=10, help="heads listed in the printed summary")
    p.set_defaults(func=run_rank)
