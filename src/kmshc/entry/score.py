"""``kmshc score``: the accuracy of the model with only some heads kept, as one JSON object."""
from __future__ import annotations

import argparse


def _score(args: argparse.Namespace) -> dict:
    """Score one head set on one split of the experiment the flags describe; the defective items
    skipped are reported too."""
    import torch

    from kmshc.engine.device import input_device
    from kmshc.experiment import Experiment
    from kmshc.types import heads_to_mask, mask_to_heads
    exp = Experiment(**{name: getattr(args, name) for name in SCORE_FIELDS})
    n_layers, n_heads = exp.shape
    if args.keep == "all":
        mask = torch.ones(n_layers, n_heads)
    elif args.keep == "none":
        mask = torch.zeros(n_layers, n_heads)
    else:
        mask = heads_to_mask([h for h in args.keep.split(",") if h], n_layers, n_heads)
    scorer = exp.scorer_for(args.split)  # mean ablation averages over train, whichever split is scored
    out = scorer.outcomes(mask)
    return {"accuracy": round(float(out.accuracy[0]), 4), "mean_margin": round(float(out.margin.mean()), 4),
            "n": scorer.n, "skipped": exp.data_skipped, "model": args.model, "task": exp.task_name, "split": args.split,
            "scorer": args.scorer, "ablation": args.ablation, "device": str(input_device(exp.loaded[0])),
            "kept_heads": [h.name for h in mask_to_heads(mask)] if args.keep not in ("all", "none") else args.keep,
            "n_heads_total": n_layers * n_heads}


# the Experiment fields `kmshc score` takes as flags
SCORE_FIELDS = ["model", "task", "data", "labels", "task_args", "limit", "ablation", "per_position", "scorer", "dtype",
                "device", "device_map", "seed", "on_defect"]


def add_score_parser(sub) -> None:
    from kmshc.entry.experiment_args import add_experiment_arguments
    s = sub.add_parser("score", help="accuracy of the model with only some heads kept")
    add_experiment_arguments(s, SCORE_FIELDS[:5], task={"required": True})
    s.add_argument("--split", default="all", choices=["train", "val", "test", "all"],
                   help="which seeded 60/20/20 split to score (default: all items)")
    s.add_argument("--keep", default="all", help="all, none, or comma-separated heads like L0H1,L3H5")
    add_experiment_arguments(s, SCORE_FIELDS[5:])
    s.set_defaults(func=_score)
