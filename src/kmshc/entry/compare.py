"""``kmshc compare``: compare circuits across methods, tasks and seeds (:mod:`kmshc.compare`)."""
from __future__ import annotations

import argparse


def add_compare_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``kmshc compare``; the command itself lives in :mod:`kmshc.compare.report`."""
    p = sub.add_parser("compare", help="compare circuits: learned vs searched, across tasks and seeds")
    p.add_argument("paths", nargs="+", help="run directories, folders of runs, or circuit JSON files")
    p.add_argument("--out", help="write compare.json, CSV tables, PNG plots and report.md here")
    p.add_argument("--rescore", action="store_true",
                   help="rebuild each Experiment from config.experiment and score every circuit on test "
                        "(loads the model) with paired bootstrap intervals")
    p.add_argument("--curves", action="store_true",
                   help="MIB-style faithfulness curves with CPR and CMD for each circuit's head ranking, scored on "
                        "test (loads the model; see kmshc.curve_runs)")
    p.add_argument("--no_curve_cache", action="store_true",
                   help="--curves: re-score every ranking instead of reusing <out>/curve_scores.json (keyed by "
                        "experiment, ranking and grid; it cannot see changed weights behind a model path)")
    p.add_argument("--diagnostics", action="store_true",
                   help="head diagnostics (previous-token, duplicate-token, induction, attention to the answer's "
                        "earlier occurrence): circuit heads against the rest (loads the model once; see "
                        "kmshc.compare.head_scores)")
    p.add_argument("--diagnostics_top_k", type=int, default=10,
                   help="--diagnostics: count how many of the model's top k heads by each score a circuit holds")
    p.add_argument("--wandb", action="store_true", help="also log tables and images to W&B (offline by default)")
    p.add_argument("--wandb_project", default="kmshc-compare")
    p.add_argument("--shape", help="layers x heads, e.g. 30x9 (default: inferred from gates or head counts)")
    p.add_argument("--strong", type=float, default=0.5, help="strong head: within-task frequency >= this")
    p.add_argument("--super", dest="super_", type=float, default=0.9,
                   help="super head: within-task frequency >= this and strong in no other task")
    p.add_argument("--n_boot", type=int, default=1000, help="bootstrap resamples for --rescore intervals")
    p.add_argument("--title", default="Circuit comparison", help="heading of report.md")

    def run(args: argparse.Namespace) -> dict:
        from kmshc.compare.report import run_compare  # matplotlib and torch load only when it runs
        return run_compare(args)

    p.set_defaults(func=run)
