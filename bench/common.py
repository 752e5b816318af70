"""Shared pieces of the benchmark scripts: arguments, data, timing, peak RSS, tables, the doc.

Every benchmark runs its variants interleaved in one process (on a shared machine absolute
times drift; ratios from one run are what the tables report) and writes its table, with the
exact command, to a dated page ``docs/results/<date>-<script>.md`` (``--doc``).
"""
from __future__ import annotations

import argparse
import os
import platform
import shlex
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from statistics import median
from typing import Callable

import torch

from kmshc.engine.memory import peak_rss_mb  # noqa: F401  (re-exported for the benchmarks)
from kmshc.engine.models import load_model
from kmshc.tasks import grammar_task, make_task
from kmshc.tasks.base import Task, split_task
from kmshc.types import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"
BLIMP = "$KMSHC_DATA/blimp/{}.jsonl"  # a paradigm name's file, in the KMSHC_DATA folder (README, Data)


def parser(description: str, pairs: int = 48) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--model", default="smollm2-135m", help="model spec (tiny-<arch> for smoke tests)")
    p.add_argument("--dtype", default="float32",
                   help="float32 by default: on a CPU without native bf16, bf16 is emulated and slower")
    p.add_argument("--task", default="determiner_noun_agreement_1",
                   help="a BLiMP paradigm name (read from $KMSHC_DATA/blimp/), a jsonl path, or 'grammar'")
    p.add_argument("--pairs", type=int, default=pairs, help="minimal pairs scored per evaluation")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: leave torch's default)")
    p.add_argument("--doc", default="results", help="where the table goes: 'results' (the dated page "
                   "docs/results/<date>-<script>.md), a markdown file to append it to, or 'none' (print only)")
    return p


def parse(p: argparse.ArgumentParser, argv: list[str] | None, script: str) -> argparse.Namespace:
    """Parse ``argv`` (default: the command line) and remember the command that reproduces it."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = p.parse_args(argv)
    rel = os.path.relpath(Path(script).resolve(), ROOT)
    args.command = "python " + " ".join(shlex.quote(a) for a in [rel, *argv])
    args.script = Path(script).stem
    return args


def setup(args: argparse.Namespace):
    """Threads, seed and the model: ``(model, tokenizer)``."""
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    return load_model(args.model, dtype=args.dtype)


def load_task(name: str, seed: int = 0) -> Task:
    """A BLiMP paradigm by name or path, or the generated ``grammar`` task."""
    if name == "grammar":
        return grammar_task(n=400, seed=seed)
    if not name.endswith(".jsonl"):
        return make_task("blimp", data=BLIMP.format(name))
    return make_task("blimp", data=name if os.path.isabs(name) else str(ROOT / name))


def task_splits(name: str, pairs: int, seed: int = 0) -> dict[str, Task]:
    """60/20/20 train/val/test splits of ``5·pairs`` items, so val and test hold ``pairs`` each."""
    return split_task(load_task(name, seed), seed=seed, limit=5 * pairs)


class EntryFailed(RuntimeError):
    """An entry point of this repository (``train.py``, ``search.py``) exited with an error."""


def run_entry(cmd: list[str], log: Path) -> None:
    """Run ``python cmd…`` from the repository root, offline, its output to ``log``; a non-zero exit
    raises :class:`EntryFailed` with the command and the log's last lines."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as f:
        rc = subprocess.run([sys.executable, *cmd], cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT).returncode
    if rc:
        tail = "".join(log.read_text(errors="replace").splitlines(True)[-20:])
        raise EntryFailed(f"failed ({rc}): {shlex.join(cmd)}\n(log {log})\n{tail}")


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def interleaved(variants: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds per variant; each repeat runs every variant once, in turn, so drift hits all alike."""
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            times[name].append(timed(fn)[0])
    return {k: median(v) for k, v in times.items()}


def table(headers: list[str], rows: list[list]) -> str:
    def cell(x) -> str:
        if isinstance(x, float):
            return f"{x:.3g}" if abs(x) < 1000 else f"{x:.0f}"
        return str(x)
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(x) for x in r) + " |" for r in rows]
    return "\n".join(lines)


def machine() -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads, {gpu}; load average at the end {load:.1f}")


def report(args: argparse.Namespace, title: str, tab: str, notes: list[str] | None = None) -> str:
    """Print the section and append it (with the command that made it) to ``args.doc``."""
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [f"### {title}", "", f"`{args.command}`  ({when}; {machine()})", "", tab, ""]
    parts += [f"- {n}" for n in notes or []]
    section = "\n".join(parts).rstrip() + "\n\n"
    print(section)
    if args.doc != "none":
        doc = Path(args.doc) if args.doc != "results" else RESULTS / f"{when[:10]}-{args.script}.md"
        first = (f"# Benchmarks: {args.script}\n\nGuide: [benchmarks.md](../benchmarks.md).\n\n"
                 if args.doc == "results" else "# Benchmarks\n\n")
        old = doc.read_text() if doc.exists() else first
        doc.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(doc, old + section)
    return section
