"""``kmshc toy --seed S --out DIR``: train the toy induction model (:mod:`kmshc.toy`) and save it."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kmshc.toy.induction import ToyConfig, save_toy, train_toy
from kmshc.types import KmshcError


def _toy_command(args: argparse.Namespace) -> dict:
    cfg = ToyConfig(seed=args.seed, steps=args.steps, threads=args.threads)
    if Path(args.out).exists() and any(Path(args.out).iterdir()):  # fail before a minute of training
        raise KmshcError(f"{args.out}: exists and is not empty; choose another --out or remove it")
    result = train_toy(cfg, log=lambda line: print(line, file=sys.stderr, flush=True))
    if result.copy_accuracy < cfg.target - 0.05:
        print(f"warning: copy accuracy {result.copy_accuracy:.3f} after {result.steps} steps; the induction "
              f"circuit may not have formed (try more --steps)", file=sys.stderr)
    return {"out": str(save_toy(result, cfg, args.out)), "seed": cfg.seed, "steps": result.steps,
            "copy_accuracy": round(result.copy_accuracy, 4)}


def add_toy_parser(sub) -> None:
    """``kmshc toy --seed S --out DIR``: train the toy induction model and save it."""
    p = sub.add_parser("toy", help="train the toy induction model (known circuit) and save it to a folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="folder to write (save_pretrained format); must be new or empty")
    p.add_argument("--steps", type=int, default=ToyConfig.steps,
                   help="most training steps (training stops earlier once the copy accuracy reaches 0.95)")
    p.add_argument("--threads", type=int, default=ToyConfig.threads,
                   help="torch threads while training; results are reproducible for a fixed count")
    p.set_defaults(func=_toy_command)
