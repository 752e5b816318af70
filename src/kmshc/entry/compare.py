"""``kmshc compare``: compare circuits across methods, tasks and seeds (:mod:`kmshc.compare`)."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_compare_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``kmshc compare``; :func:`run_compare` runs it (matplotlib and torch load only then)."""
    p = sub.add_parser("compare", help="compare circuits: learned vs searched, across tasks and seeds")
    p.add_argument("paths", nargs="+", help="run directories, folders of runs, or circuit JSON files")
    p.add_argument("--out", help="write compare.json, CSV tables, PNG plots and report.md here")
    p.add_argument("--rescore", action="store_true",
                   help="rebuild each Experiment from config.experiment and score every circuit on test "
                        "(loads the model) with paired bootstrap intervals")
    p.add_argument("--curves", action="store_true",
                   help="MIB-style faithfulness curves with CPR and CMD for each circuit's head ranking, scored on "
                        "test (loads the model; see kmshc.compare.curve_runs)")
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

    p.set_defaults(func=run_compare)


def run_compare(args: argparse.Namespace) -> dict[str, Any]:
    """``kmshc compare``: build the comparison, add curves and diagnostics when asked, write and log it."""
    from kmshc.compare.entries import infer_shape, load_entries
    from kmshc.compare.report import build, csv_text, markdown, parse_shape, write_plots
    from kmshc.compare.tables import rescore
    from kmshc.types import atomic_write_json, atomic_write_text
    entries = load_entries(args.paths)
    shape = parse_shape(args.shape) if args.shape else infer_shape(entries)
    rescored = None
    if args.rescore:
        rescored = rescore(entries, n_boot=args.n_boot)
    result = build(entries, shape, args.strong, args.super_, rescored)
    images: list[Path] = []
    if args.curves:
        from kmshc.compare.curve_runs import compare_curves
        curves = compare_curves(entries, Path(args.out) if args.out else None,
                                cache=not args.no_curve_cache)
        images += curves.pop("images")
        result["faithfulness"] = curves
    if args.diagnostics:
        from kmshc.compare.head_scores import compare_diagnostics
        result["diagnostics"] = compare_diagnostics(entries, top_k=args.diagnostics_top_k)
    if args.out:
        out = Path(args.out)
        images = write_plots(entries, result, out) + images
        atomic_write_json(out / "compare.json", result)
        atomic_write_text(out / "circuits.csv", csv_text(result["circuits"]))
        atomic_write_text(out / "pairs.csv", csv_text(result["pairs"]))
        atomic_write_text(out / "report.md", markdown(result, images, out, args.title))
    if args.wandb:
        from kmshc.compare.wandb_log import log_compare  # the only wandb user of compare
        log_compare(result, images, project=args.wandb_project, out_dir=args.out)
    summary = {m: {t: {"mean_size": v["mean_size"], "seed_stability": v["seed_stability"]}
                   for t, v in info["tasks"].items()} for m, info in result["analysis"]["methods"].items()}
    return {"n_circuits": len(entries), "shape": list(shape), "out": args.out, "summary": summary,
            "learned_vs_searched": result["analysis"]["learned_vs_searched"],
            "images": [str(p) for p in images]}

