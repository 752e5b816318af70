"""``kmshc score``: the accuracy of the model with only some heads kept, as one JSON object."""
from __future__ import annotations

import argparse
import json


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


def _json_object(text: str) -> dict:
    """An argument that is a JSON object: ``--task_args``, and ``--device_map`` when it is not a name."""
    try:
        d = json.loads(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"not a JSON object ({e})") from None
    if not isinstance(d, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return d


def _device_map(text: str) -> str | dict:
    """``--device_map``: a strategy name such as ``auto``, or a JSON object."""
    return _json_object(text) if text.lstrip().startswith("{") else text


def add_score_parser(sub) -> None:
    from kmshc.engine.ablation import ABLATIONS, DEFAULT_ABLATION
    from kmshc.tasks import TASKS
    s = sub.add_parser("score", help="accuracy of the model with only some heads kept")
    s.add_argument("--model", default="smollm2-135m")
    s.add_argument("--task", required=True, choices=TASKS)
    s.add_argument("--data", help="jsonl file for --task blimp / labels")
    s.add_argument("--labels", nargs="+", help="label words for --task labels, e.g. ' True' ' False'")
    s.add_argument("--task_args", type=_json_object, default={},
                   help='generator arguments as a JSON object, e.g. \'{"phenomena": ["determiner_noun"]}\' '
                        "(grammar) or '{\"preset\": \"paper\"}' (arithmetic)")
    s.add_argument("--split", default="all", choices=["train", "val", "test", "all"],
                   help="which seeded 60/20/20 split to score (default: all items)")
    s.add_argument("--limit", type=int, help="use at most N items (taken after a seeded shuffle)")
    s.add_argument("--keep", default="all", help="all, none, or comma-separated heads like L0H1,L3H5")
    s.add_argument("--ablation", default=DEFAULT_ABLATION, choices=ABLATIONS,
                   help="counterfactual: patch from each item's own counterfactual (ioi, greater_than, induction)")
    s.add_argument("--per_position", action="store_true", help="mean ablation per position")
    s.add_argument("--scorer", default="pair_logprob", choices=["pair_logprob", "label_tokens", "probe"])
    s.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "auto"],
                   help="auto: bf16 where the model computes natively in it (CUDA, or a CPU with avx512_bf16/"
                        "amx_bf16), else float32")
    s.add_argument("--device", default="auto", help="auto|cpu|cuda|cuda:N where the model runs (auto: CUDA when "
                                                    "present)")
    s.add_argument("--device_map", default=None, type=_device_map,
                   help="spread a model too large for one device: auto (accelerate), or a JSON object of "
                        "module name -> device; overrides --device")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--on_defect", default="skip", choices=["skip", "error"],
                   help="a defective item of --data (identical sentences or tokens): skip it with a warning "
                        "and record it in the output (default), or stop with an error")
    s.set_defaults(func=_score)
