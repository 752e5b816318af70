"""Every head ranking side by side: learned gates, attribution, integrated gradients, forward
selection, Causal Head Gating and a random order, on IOI, greater-than, induction, BLiMP
determiner-noun agreement 1 and the toy induction model whose circuit is known.

For each (task, seed), one experiment (model, task, splits, ablation) shared by every ranking:
the gates come from ``train.py`` with the task's config, the training-free rankings from
:mod:`kmshc.rank` (as ``kmshc rank`` runs them) on the train split, CHG from its optional package.
Each ranking's faithfulness curve is scored on the test split (mean margin; the experiment's
ablation, and counterfactual ablation where the task has counterfactuals), giving CPR and CMD
(docs/curves.md), with the example forwards the ranking cost. At seed 0, the learned gates, the
best training-free ranking (by CPR) and forward selection each start a warm search
(``search.py --mode warm``) through to a certificate. On the toy, every ranking's top heads are
scored against the mechanism read from attention alone (docs/ground_truth.md).

Resumable: every step writes one JSON under ``--out`` and is skipped when it exists.

    python bench/rankers.py --md runs/rankers/rankers.md                        # the full run
    python bench/rankers.py --tasks ioi toy --seeds 0 --rankings gates attribution forward_selection random
"""
from __future__ import annotations

import argparse
import gc
import shlex
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from statistics import mean

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import EntryFailed, machine, parse  # noqa: E402
from rankers_report import figures, goal_checks, task_table  # noqa: E402
from rankers_steps import (DEFAULT_KS, RANKINGS, SMALL_MODEL, TASKS, TRAINING_FREE, Options, Skip,  # noqa: E402
                           baseline, curve_sizes, make_cell, ranking_step, search_step)

from kmshc.types import KmshcError, atomic_write_json, atomic_write_text  # noqa: E402

SEARCH_ARGS = "--epsilon 0.9 --max_evaluations 200 --max_test_items 960"  # induction from the default gates took 135


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", nargs="+", choices=list(TASKS), default=list(TASKS))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--rankings", nargs="+", choices=RANKINGS, default=list(RANKINGS))
    p.add_argument("--variant", action="append", default=[], metavar="NAME=ARGS",
                   help="another learned ranking: train.py with these extra flags, e.g. "
                        "--variant 'gates_att=--model.init attribution' (repeatable)")
    p.add_argument("--ks", nargs="+", default=None, metavar="K",
                   help="curve sizes: a head count (5) or a fraction of the heads (0.05); 0 and all heads always. "
                        f"Default: {' '.join(map(str, DEFAULT_KS))}, or every default grid size on models with "
                        f"at most {SMALL_MODEL} heads (the toy)")
    p.add_argument("--curve_items", type=int, default=80, help="score the curves on the first N test items (0: all)")
    p.add_argument("--model", default=None, help="model of the language tasks (default: the configs' smollm2-135m)")
    p.add_argument("--items", type=int, default=None, help="items per task (default: 600 for the language tasks, "
                   "split 120/240/240; the toy config's 1000)")
    p.add_argument("--train_args", default="", help="more train.py flags for every gate run")
    p.add_argument("--search_args", default=SEARCH_ARGS, help="more search.py flags for every warm search")
    p.add_argument("--searches", choices=["auto", "none"], default="auto",
                   help="auto: warm searches at seed 0 from the learned rankings, the best training-free one and "
                        "forward selection; none: curves only")
    p.add_argument("--out", default="runs/rankers")
    p.add_argument("--md", default=None, help="also write the markdown tables here (always: OUT/rankers.md)")
    return parse(p, argv, __file__)


def options(args: argparse.Namespace) -> Options:
    variants = {}
    for v in args.variant:
        name, sep, rest = v.partition("=")
        if not sep or not name or name in RANKINGS:
            sys.exit(f"--variant {v!r}: expected NAME=train.py flags, NAME not one of {', '.join(RANKINGS)}")
        variants[name] = tuple(shlex.split(rest))
    ks = None if args.ks is None else tuple(float(k) if "." in k else int(k) for k in args.ks)
    return Options(out=Path(args.out).resolve(), model=args.model, items=args.items, ks=ks,
                   curve_items=args.curve_items or None, train_args=tuple(shlex.split(args.train_args)),
                   search_args=tuple(shlex.split(args.search_args)), variants=variants)


def say(task: str, seed: int, name: str, what: str, t0: float) -> None:
    print(f"[{task} s{seed}] {name:<22} {what} ({time.perf_counter() - t0:.1f} s)", flush=True)


def describe(rec: dict) -> str:
    if rec.get("skipped"):
        return "done earlier"
    curves = " | ".join(f"{ab}: CPR {c['cpr']:.3f} CMD {c['cmd']:.3f}" for ab, c in rec.get("curves", {}).items())
    return f"{rec['example_forwards']:.0f} example forwards to rank; {curves or 'no curve'}"


def guarded(task: str, seed: int, name: str, failures: list[str], fn):
    """Run one step; a skipped ranking or a failed run is printed (and a failure kept), not fatal."""
    t0 = time.perf_counter()
    try:
        rec = fn()
    except Skip as e:
        say(task, seed, name, f"skipped: {e}", t0)
        return None
    except (EntryFailed, KmshcError) as e:
        failures.append(f"{task} s{seed} {name}: {e}")
        say(task, seed, name, f"FAILED: {str(e).splitlines()[0]}", t0)
        return None
    return rec, t0


def cell_for(task: str, seed: int, opts: Options):
    if not TASKS[task].toy:
        return make_cell(task, seed, opts)
    from ground_truth import diagnostics, toy
    from kmshc.toy.ground_truth import reference_circuit
    seed_dir = opts.out / task / f"s{seed}"
    seed_dir.mkdir(parents=True, exist_ok=True)
    model = toy(seed_dir, seed)  # trained once, then reused
    return make_cell(task, seed, opts, toy_model=model, reference=reference_circuit(diagnostics(seed_dir, model)))


def run_seed(task: str, seed: int, names: list[str], opts: Options, steps: dict, failures: list[str]) -> dict | None:
    """Every ranking's step at one seed; returns the baseline (``None`` when it failed)."""
    cell = None

    def start() -> dict:
        nonlocal cell
        cell = cell_for(task, seed, opts)
        return baseline(cell)
    done = guarded(task, seed, "baseline", failures, start)
    if done is None:
        return None
    base = done[0]
    ends = ", ".join(f"{ab} {v[0]:.3f}, {v[1]:.3f}" for ab, v in base["ablations"].items())
    ks = ", ".join(map(str, curve_sizes(opts, base)))
    say(task, seed, "baseline", f"S(M), S(∅): {ends or 'no usable ablation'}; curve sizes k = {ks}", done[1])
    for name in names:
        done = guarded(task, seed, name, failures, lambda: ranking_step(cell, name, base))
        if done is not None:
            steps[name].append(done[0])
            say(task, seed, name, describe(done[0]), done[1])
    return base


def to_search(steps: dict[str, list[dict]], opts: Options, primary: str) -> list[str]:
    """Seed-0 warm searches: learned rankings, the best training-free one by mean CPR, forward selection."""
    at0 = {n for n, recs in steps.items() if any(r["seed"] == 0 for r in recs)}
    free = [n for n in TRAINING_FREE if n in at0 and all(primary in r["curves"] for r in steps[n])]
    best = [max(free, key=lambda n: mean(r["curves"][primary]["cpr"] for r in steps[n]))] if free else []
    fs = ["forward_selection"] if "forward_selection" in at0 else []
    chosen = [n for n in steps if n == "gates" or n in opts.variants] + best + fs
    return [n for i, n in enumerate(chosen) if n in at0 and n not in chosen[:i]]


def run_task(task: str, args: argparse.Namespace, names: list[str], opts: Options, failures: list[str]) -> dict:
    steps: dict[str, list[dict]] = {n: [] for n in names}
    bases = {}
    for seed in args.seeds:
        bases[seed] = run_seed(task, seed, names, opts, steps, failures)
        gc.collect()  # the seed's model goes before the next one loads
    base = next((b for b in bases.values() if b is not None), None)
    if base is None:
        return {"steps": steps, "searches": {}, "goals": [f"{task}: no baseline: nothing measured"], "md": ""}
    primary = next(iter(base["ablations"]), None)
    searches = {}
    if args.searches == "auto" and 0 in args.seeds and primary:
        cell = cell_for(task, 0, opts)
        for name in to_search(steps, opts, primary):
            done = guarded(task, 0, f"{name} search", failures, lambda: search_step(cell, name))
            if done is not None:
                searches[name] = s = done[0]
                say(task, 0, f"{name} search", "done earlier" if s.get("skipped") else
                    f"{s['evaluations']} evaluations, {s['example_forwards']:.0f} example forwards, |C| = {s['size']}, "
                    f"{s['verdict']}", done[1])
    ks = curve_sizes(opts, base)
    md = task_table(task, steps, searches, base, ks, toy=TASKS[task].toy)
    images = figures(task, steps, list(base["ablations"]), opts.out)
    md += "".join(f"\n![{task} curves]({p.name})\n" for p in images)
    return {"steps": steps, "searches": searches, "goals": goal_checks(task, steps, searches, primary), "md": md}


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    opts = options(args)
    names = [n for n in args.rankings if n == "gates"] + list(opts.variants) + \
            [n for n in args.rankings if n != "gates"]
    ks = "default" if opts.ks is None else " ".join(map(str, opts.ks))
    print(f"rankings: {' '.join(names)}; tasks: {' '.join(args.tasks)}; seeds: {' '.join(map(str, args.seeds))}; "
          f"curve sizes: {ks} (each task prints its k); test items per curve: {opts.curve_items or 'all'}", flush=True)
    failures: list[str] = []
    results = {task: run_task(task, args, names, opts, failures) for task in args.tasks}
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    md = "\n".join([f"`{args.command}` ({when}; {machine()})", ""] + [r["md"] for r in results.values()]
                   + ["### Goals", ""] + [f"- {g}" for r in results.values() for g in r["goals"]]
                   + ([""] + [f"- failed: {f.splitlines()[0]}" for f in failures] if failures else [])) + "\n"
    for path in {opts.out / "rankers.md", *([Path(args.md)] if args.md else [])}:
        atomic_write_text(path, md)
    atomic_write_json(opts.out / "rankers.json", {"command": args.command, "failures": failures, "tasks": {
        t: {"goals": r["goals"], "searches": r["searches"]} for t, r in results.items()}})
    print(md)
    return {"results": results, "failures": failures, "md": md}


if __name__ == "__main__":
    main()
