"""``python -m kmshc``: ``score`` one head set on a task, survey ``tasks``, ``compare`` circuits.

User errors (:class:`KmshcError`) print one clear line and exit with status 2; ``--debug``
shows the traceback instead.
"""
from __future__ import annotations

import argparse
import json
import sys

from kmshc.redundancy_cli import add_redundancy_parser
from kmshc.show import add_show_parser
from kmshc.survey import add_tasks_parser
from kmshc.types import KmshcError


def _score(args: argparse.Namespace) -> dict:
    from functools import cache

    import torch

    from kmshc.architectures import head_shape
    from kmshc.models import load_model
    from kmshc.tasks import make_task, split_task
    from kmshc.tasks.defects import screen, skipped_summary
    from kmshc.tasks.base import merge_splits
    from kmshc.scoring import Scorer
    from kmshc.types import heads_to_mask, mask_to_heads
    task = make_task(args.task, data=args.data, seed=args.seed, labels=args.labels, on_defect=args.on_defect)
    loaded = cache(lambda: load_model(args.model, dtype=args.dtype))  # loaded once, after the cheap checks
    task = screen(task, lambda: loaded()[1], args.on_defect)  # before the split: it splits usable items only
    splits = split_task(task, seed=args.seed, limit=args.limit)
    if args.split == "all":  # every item after --limit; mean ablation still averages over train
        splits["all"] = merge_splits(task, splits)
    model, tok = loaded()
    n_layers, n_heads = head_shape(model)
    if args.keep == "all":
        mask = torch.ones(n_layers, n_heads)
    elif args.keep == "none":
        mask = torch.zeros(n_layers, n_heads)
    else:
        mask = heads_to_mask([h for h in args.keep.split(",") if h], n_layers, n_heads)
    scorer = Scorer(model, tok, splits[args.split], scorer=args.scorer, ablation=args.ablation,
                    train=splits["train"], per_position=args.per_position, seed=args.seed)
    out = scorer.outcomes(mask)
    return {"accuracy": round(float(out.accuracy[0]), 4), "mean_margin": round(float(out.margin.mean()), 4),
            "n": scorer.n, "skipped": skipped_summary(task), "model": args.model, "task": task.name, "split": args.split,
            "scorer": args.scorer, "ablation": args.ablation,
            "kept_heads": [h.name for h in mask_to_heads(mask)] if args.keep not in ("all", "none") else args.keep,
            "n_heads_total": n_layers * n_heads}


def build_parser() -> argparse.ArgumentParser:
    from kmshc.ablation import ABLATIONS
    from kmshc.tasks import TASKS
    p = argparse.ArgumentParser(prog="kmshc", description=__doc__.splitlines()[0])
    p.add_argument("--debug", action="store_true", help="show tracebacks for user errors")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("score", help="accuracy of the model with only some heads kept")
    s.add_argument("--model", default="smollm2-135m")
    s.add_argument("--task", required=True, choices=TASKS)
    s.add_argument("--data", help="jsonl file for --task blimp / labels")
    s.add_argument("--labels", nargs="+", help="label words for --task labels, e.g. ' True' ' False'")
    s.add_argument("--split", default="all", choices=["train", "val", "test", "all"],
                   help="which seeded 60/20/20 split to score (default: all items)")
    s.add_argument("--limit", type=int, help="use at most N items (taken after a seeded shuffle)")
    s.add_argument("--keep", default="all", help="all, none, or comma-separated heads like L0H1,L3H5")
    s.add_argument("--ablation", default="zero", choices=ABLATIONS,
                   help="counterfactual: patch from each item's own counterfactual (ioi, greater_than, induction)")
    s.add_argument("--per-position", action="store_true", help="mean ablation per position")
    s.add_argument("--scorer", default="pair_logprob", choices=["pair_logprob", "label_tokens", "probe"])
    s.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "auto"],
                   help="auto: bf16 on CUDA or a CPU with native bf16 (avx512_bf16/amx_bf16), else float32")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--on_defect", default="skip", choices=["skip", "error"],
                   help="a defective item of --data (identical sentences or tokens): skip it with a warning "
                        "and record it in the output (default), or stop with an error")
    s.set_defaults(func=_score)
    add_tasks_parser(sub)
    add_show_parser(sub)
    add_redundancy_parser(sub)
    try:
        from kmshc.compare import add_compare_parser
        add_compare_parser(sub)
    except ImportError:  # compare is optional until it is built
        pass
    return p


def run_entry(main_fn, argv: list[str]) -> None:
    """Run an entry point's ``main(argv)``: a :class:`KmshcError` prints one line and exits 2;
    ``--debug`` anywhere in ``argv`` shows the traceback instead."""
    debug = "--debug" in argv
    try:
        main_fn([a for a in argv if a != "--debug"])
    except KmshcError as e:
        if debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = args.func(args)
    except KmshcError as e:
        if args.debug:
            raise
        print(f"kmshc: error: {e}", file=sys.stderr)
        return 2
    if result is not None:
        print(json.dumps(result))
    return 0
