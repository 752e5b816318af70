"""``kmshc score``: the accuracy of the model with only some heads kept, as one JSON object."""
from __future__ import annotations

import argparse


def _score(args: argparse.Namespace) -> dict:
    """Score one head set on one split; the defective items skipped are reported too."""
    from functools import cache

    import torch

    from kmshc.engine.architectures import head_shape
    from kmshc.engine.device import input_device
    from kmshc.engine.models import load_model
    from kmshc.tasks import make_task, split_task
    from kmshc.tasks.defects import screen, skipped_summary
    from kmshc.tasks.base import merge_splits
    from kmshc.engine.scoring import Scorer
    from kmshc.types import heads_to_mask, mask_to_heads
    task = make_task(args.task, data=args.data, seed=args.seed, labels=args.labels, on_defect=args.on_defect,
                     **args.task_args)
    loaded = cache(lambda: load_model(args.model, dtype=args.dtype, device=args.device,  # once, after the cheap checks
                                      device_map=args.device_map))
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
            "scorer": args.scorer, "ablation": args.ablation, "device": str(input_device(model)),
            "kept_heads": [h.name for h in mask_to_heads(mask)] if args.keep not in ("all", "none") else args.keep,
            "n_heads_total": n_layers * n_heads}


def add_score_parser(sub) -> None:
    from kmshc.entry.experiment_args import add_experiment_arguments
    s = sub.add_parser("score", help="accuracy of the model with only some heads kept")
    add_experiment_arguments(s, ["model", "task", "data", "labels", "task_args"], task={"required": True})
    s.add_argument("--split", default="all", choices=["train", "val", "test", "all"],
                   help="which seeded 60/20/20 split to score (default: all items)")
    s.add_argument("--keep", default="all", help="all, none, or comma-separated heads like L0H1,L3H5")
    add_experiment_arguments(s, ["limit", "ablation", "per_position", "scorer", "dtype", "device", "device_map",
                                 "seed", "on_defect"])
    s.set_defaults(func=_score)
