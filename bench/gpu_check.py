"""GPU check: the main job's steps (score, learn gates, warm search + certificate) on CPU float32
and on CUDA, through the real entry points; checks that they agree and prints a table of times.

    python bench/gpu_check.py                      # on a GPU machine: cpu and cuda, then compare
    python bench/gpu_check.py --dry-run            # print the commands only
    python bench/gpu_check.py --devices cpu --model tiny-gpt2 --limit 60 --steps 4 --threshold 0.4 --doc none

Agreement (both runs in float32 unless ``--cuda_dtype``): the full model's accuracy on the same
pairs within ``--acc_tol``, and the learned and searched circuits by Jaccard similarity at least
``--min_jaccard`` (training draws its gate noise on the device, so circuits may differ a little).
Exit status 1 when a check fails. The section goes to a dated page in docs/results/ unless ``--doc none``.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from common import ROOT, parse, report, table

STEPS = ("score", "train", "search")


@dataclass
class DeviceRun:
    """One device's results: seconds per step, full-model accuracy, learned and searched heads."""

    device: str
    seconds: dict[str, float] = field(default_factory=dict)
    accuracy: float | None = None
    learned: set[str] = field(default_factory=set)
    searched: set[str] = field(default_factory=set)
    evaluations: int | None = None
    verified: bool | None = None


def jaccard(a: set[str], b: set[str]) -> float:
    """``|a ∩ b| / |a ∪ b|``; two empty circuits agree (1.0)."""
    return len(a & b) / len(a | b) if a | b else 1.0


def commands(args, device: str, dtype: str, runs: Path) -> dict[str, list[str]]:
    """The three steps of the main job (scripts/main.sh) on ``device``, as argument lists."""
    py = sys.executable
    run = runs / device.replace(":", "_")
    threshold = ["--threshold", str(args.threshold)] if args.threshold is not None else []
    return {
        "score": [py, "-m", "kmshc", "score", "--model", args.model, "--task", "grammar", "--limit", str(args.limit),
                  "--dtype", dtype, "--device", device],
        "train": [py, "train.py", "fit", "--config", "configs/train/default.yaml", "--device", device,
                  "--runs_dir", str(runs), "--name", run.name, "--overwrite", "--log_to", "csv",
                  "--trainer.max_steps", str(args.steps), "--trainer.val_check_interval", str(args.steps),
                  "--trainer.enable_progress_bar", "false", "--data.experiment.model", args.model,
                  "--data.experiment.dtype", dtype, "--data.experiment.limit", str(args.limit)],
        "search": [py, "search.py", "--config", "configs/search/default.yaml", "--mode", "warm", "--from_run",
                   str(run), "--device", device, "--dtype", dtype, "--overwrite", "true", "--progress", "false",
                   *threshold],
    }


def run_device(args, device: str, dtype: str, runs: Path) -> DeviceRun:
    """Run the steps in turn, timing each process (model load included), and read their outputs."""
    res = DeviceRun(device)
    for step, cmd in commands(args, device, dtype, runs).items():
        t = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        res.seconds[step] = time.perf_counter() - t
        if proc.returncode != 0:
            raise SystemExit(f"{device} {step} failed (exit {proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-2000:]}")
        if step == "score":
            res.accuracy = json.loads(proc.stdout.strip().splitlines()[-1])["accuracy"]
    run = runs / device.replace(":", "_")
    res.learned = set(json.loads((run / "circuit_learned.json").read_text())["heads"])
    searched = json.loads((run / "circuit_searched.json").read_text())
    res.searched, res.evaluations = set(searched["heads"]), searched["evaluations"]
    res.verified = searched["certificate"]["verified"]
    return res


def checks(ref: DeviceRun, other: DeviceRun, acc_tol: float, min_jaccard: float) -> list[tuple[str, str, bool]]:
    """``(check, value, passed)`` rows comparing ``other`` with the CPU reference."""
    d_acc = abs(other.accuracy - ref.accuracy)
    j_l, j_s = jaccard(ref.learned, other.learned), jaccard(ref.searched, other.searched)
    return [("full-model accuracy difference", f"{d_acc:.4f} (tolerance {acc_tol})", d_acc <= acc_tol),
            ("learned circuit Jaccard", f"{j_l:.2f} (at least {min_jaccard})", j_l >= min_jaccard),
            ("searched circuit Jaccard", f"{j_s:.2f} (at least {min_jaccard})", j_s >= min_jaccard)]


def main(argv: list[str] | None = None) -> int:
    import argparse
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--devices", nargs="+", default=["cpu", "cuda"], help="the first one is the reference")
    p.add_argument("--cuda_dtype", default="float32", choices=["float32", "bfloat16"],
                   help="dtype of the non-CPU runs (the CPU reference is always float32)")
    p.add_argument("--limit", type=int, default=400, help="grammar pairs (60/20/20 train/val/test)")
    p.add_argument("--steps", type=int, default=80, help="gate-training steps (the main job's 80)")
    p.add_argument("--threshold", type=float, help="absolute search threshold (a tiny random model has no gap)")
    p.add_argument("--acc_tol", type=float, default=0.01)
    p.add_argument("--min_jaccard", type=float, default=0.5)
    p.add_argument("--runs_dir", default="runs/gpu_check")
    p.add_argument("--doc", default="results", help="'results': a dated page in docs/results/; a file to append "
                   "to; 'none': print only")
    p.add_argument("--dry-run", action="store_true", help="print the commands and exit")
    args = parse(p, argv, __file__)
    runs = (ROOT / args.runs_dir).resolve()
    dtypes = {d: "float32" if d == "cpu" else args.cuda_dtype for d in args.devices}
    if args.dry_run:
        for d in args.devices:
            for cmd in commands(args, d, dtypes[d], runs).values():
                print(" ".join(cmd))
        return 0
    results = [run_device(args, d, dtypes[d], runs) for d in args.devices]
    ref = results[0]
    rows = [[step, *(f"{r.seconds[step]:.1f}" for r in results),
             *(f"{ref.seconds[step] / r.seconds[step]:.1f}x" for r in results[1:])] for step in STEPS]
    rows += [["full-model accuracy", *(f"{r.accuracy:.4f}" for r in results), *[""] * (len(results) - 1)],
             ["searched heads (evaluations)", *(f"{len(r.searched)} ({r.evaluations})" for r in results),
              *[""] * (len(results) - 1)],
             ["certificate verified", *(str(r.verified) for r in results), *[""] * (len(results) - 1)]]
    headers = ["step (seconds, model load included)", *(f"{r.device} ({dtypes[r.device]})" for r in results),
               *(f"speed-up {r.device}" for r in results[1:])]
    found = [(f"{r.device}: {name}", value, ok) for r in results[1:]
             for name, value, ok in checks(ref, r, args.acc_tol, args.min_jaccard)]
    notes = [f"{name}: {value}: {'ok' if ok else 'FAILED'}" for name, value, ok in found]
    report(args, f"gpu_check: the main job on {', '.join(args.devices)}", table(headers, rows), notes)
    return 0 if all(ok for _, _, ok in found) else 1


if __name__ == "__main__":
    sys.exit(main())
