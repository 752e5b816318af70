"""Ground truth in real weights: score learned, warm and cold circuits against the toy's known circuit.

For each toy seed: train the toy induction model (``kmshc toy``), compute its head
diagnostics and the single-head ablation table, define the reference circuit from the
diagnostics alone (:mod:`kmshc.toy.ground_truth`), then run ``train.py`` (learned), ``search.py
--mode warm`` and ``--mode cold`` with the toy configs, certify the learned circuit with
``--mode verify``, and tabulate precision, recall, the mechanism check and the certificate.

Resumable: every step skips when its output exists, so after a change to the certificate,
delete ``*/runs/*/circuit_searched.json`` and ``circuit_verified.json`` (or pass ``--redo
certificates``) and run the same command again.

    python bench/ground_truth.py --seeds 0 1 2 3 4 --out runs/ground_truth --md docs/ground_truth_table.md
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from common import parse, table  # noqa: E402

from kmshc.engine.diagnostics import HeadDiagnostics, head_diagnostics  # noqa: E402
from kmshc.experiment import Experiment  # noqa: E402
from kmshc.toy.ground_truth import (INDUCTION_THRESHOLD, PREV_THRESHOLD, SingleAblation, agreement,  # noqa: E402
                                chance, reference_circuit, single_ablation)
from kmshc.engine.models import load_model  # noqa: E402
from kmshc.toy.induction import ToyConfig, save_toy, train_toy  # noqa: E402
from kmshc.types import atomic_write_json, atomic_write_text, read_circuit  # noqa: E402

TOY_TOKENS = range(2, 2 + ToyConfig.vocab)  # the t0 … t63 ids: diagnostics draw only from them
REDUNDANT_TOLERANCE = 0.02  # a head whose single removal costs less accuracy than this is "redundant"


def _run(cmd: list[str], log: Path) -> None:
    """Run an entry point of this repository, its output to ``log``; failure -> exit with the log's tail."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1"}
    with open(log, "w") as f:
        rc = subprocess.run([sys.executable, *cmd], cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT).returncode
    if rc:
        sys.exit(f"failed ({rc}): {' '.join(cmd)}\n" + "".join(log.read_text().splitlines(True)[-20:]))


def toy(seed_dir: Path, seed: int) -> Path:
    model = seed_dir / "model"
    if not (model / "toy.json").exists():
        cfg = ToyConfig(seed=seed)
        save_toy(train_toy(cfg, log=lambda line: print(f"  toy s{seed} {line}", flush=True)), cfg, model)
    return model


def diagnostics(seed_dir: Path, model: Path) -> HeadDiagnostics:
    path = seed_dir / "diagnostics.json"
    if not path.exists() or set(json.loads(path.read_text())) != set(HeadDiagnostics.__dataclass_fields__):
        m, tok = load_model(str(model))
        atomic_write_json(path, head_diagnostics(m, tok, n_seq=64, period=10, token_ids=TOY_TOKENS).to_dict())
    d = json.loads(path.read_text())
    return HeadDiagnostics(**{k: torch.tensor(v) for k, v in d.items()})


def ablation_table(seed_dir: Path, model: Path) -> SingleAblation:
    """Accuracy on the test split with all heads, none, and all but one (mean ablation, as the configs)."""
    path = seed_dir / "single_ablation.json"
    if not path.exists():
        exp = Experiment(model=str(model), task="toy_induction", n=1000, ablation="mean")
        tab = single_ablation(lambda m: exp.scorer_for("test").outcomes(m).accuracy, exp.shape)
        atomic_write_json(path, {"full": tab.full, "empty": tab.empty, "without": tab.without})
    return SingleAblation(**json.loads(path.read_text()))


def circuits(seed_dir: Path, model: Path) -> dict[str, Path]:
    """Run train, warm, cold and verify (each skipped when done); ``{method: circuit JSON}``."""
    runs = seed_dir / "runs"
    learned = runs / "learned"
    paths = {"learned": learned / "circuit_verified.json", "warm": learned / "circuit_searched.json",
             "cold": runs / "cold" / "circuit_searched.json"}
    search = ["search.py", "--config", "configs/search/toy.yaml", "--progress", "false"]
    if not (learned / "circuit_learned.json").exists():
        _run(["train.py", "fit", "--config", "configs/train/toy.yaml", "--data.experiment.model", str(model),
              "--runs_dir", str(runs), "--name", "learned", "--overwrite"], seed_dir / "train.log")
    if not paths["learned"].exists():
        _run(search + ["--mode", "verify", "--circuit", str(learned / "circuit_learned.json")], seed_dir / "verify.log")
    if not paths["warm"].exists():
        _run(search + ["--mode", "warm", "--from_run", str(learned), "--overwrite", "true"], seed_dir / "warm.log")
    if not paths["cold"].exists():
        _run(search + ["--runs_dir", str(runs), "--name", "cold", "--experiment.model", str(model),
                       "--overwrite", "true"], seed_dir / "cold.log")
    return paths


def strongest_role(head: str, diag: HeadDiagnostics) -> str:
    """The largest of a head's attention scores, e.g. ``current 0.99``: what a head outside the reference does."""
    layer, h = (int(x) for x in head[1:].split("H"))
    scores = {f.split("_")[0]: float(getattr(diag, f)[layer, h]) for f in HeadDiagnostics.__dataclass_fields__}
    best = max(scores, key=scores.get)
    return f"{head} ({best} {scores[best]:.2f})"


def threshold_of(cert: dict) -> float | None:
    """The certificate's bar ``U``: a number, or ``{"value": U}`` in certificates written before it was one."""
    t = cert.get("threshold")
    return t.get("value") if isinstance(t, dict) else t


def rows_for(seed: int, ref, diag: HeadDiagnostics, paths: dict[str, Path]) -> list[list]:
    rows = []
    for method, path in paths.items():
        circ = read_circuit(path)
        cert = circ.certificate or {}
        a = agreement(circ.heads, ref)
        p0, m0 = chance(ref, circ.n_heads_total, len(circ.heads))
        outside = [strongest_role(h, diag) for h in circ.heads if h not in ref.heads]
        rows.append([seed, method, " ".join(circ.heads), len(circ.heads), round(a.precision, 2), round(p0, 2),
                     round(a.recall, 2), "yes" if a.has_mechanism else "**no**", round(m0, 2),
                     f"{a.previous_token_heads} / {a.induction_heads}", ", ".join(outside) or "-",
                     cert.get("circuit", {}).get("accuracy"), threshold_of(cert), cert.get("n"),
                     cert.get("verdict", cert.get("verified"))])
    return rows


def seed_summary(seed: int, diag: HeadDiagnostics, ref, tab: SingleAblation, model: Path) -> list:
    toy_info = json.loads((model / "toy.json").read_text())
    drop = {h: round(tab.full - a, 3) for h, a in tab.without.items()}
    fmt = lambda t: " ".join(f"{float(x):.2f}" for x in t)  # noqa: E731
    return [seed, toy_info["steps"], toy_info["copy_accuracy"], fmt(diag.previous_token[0]),
            fmt(diag.current_token[0]), fmt(diag.induction[1]),
            " ".join(ref.heads), " ".join(tab.redundant(ref.heads, REDUNDANT_TOLERANCE)) or "none",
            f"{tab.full:.3f} / {tab.empty:.3f}", " ".join(f"{h}:{d:+.3f}" for h, d in drop.items() if abs(d) >= 0.01)]


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--out", default="runs/ground_truth", help="folder for models, runs and the JSON summary")
    p.add_argument("--md", default=None, help="write the markdown tables here (default: OUT/ground_truth.md)")
    p.add_argument("--redo", choices=["none", "searches"], default="none",
                   help="searches: delete the verify/warm/cold circuits first (e.g. after a certificate change)")
    args = parse(p, argv, __file__)
    out = Path(args.out)
    summaries, rows, results = [], [], {}
    for seed in args.seeds:
        seed_dir = out / f"s{seed}"
        seed_dir.mkdir(parents=True, exist_ok=True)
        if args.redo == "searches":
            for f in seed_dir.glob("runs/*/circuit_*.json"):
                if f.name != "circuit_learned.json":
                    f.unlink()
        model = toy(seed_dir, seed)
        diag, tab = diagnostics(seed_dir, model), ablation_table(seed_dir, model)
        ref = reference_circuit(diag)
        paths = circuits(seed_dir, model)
        summaries.append(seed_summary(seed, diag, ref, tab, model))
        rows += rows_for(seed, ref, diag, paths)
        results[seed] = {"reference": ref.heads, "single_ablation": tab.without, "full": tab.full, "empty": tab.empty,
                         "circuits": {m: list(read_circuit(pth).heads) for m, pth in paths.items()}}
    md = report_md(args.command, summaries, rows)
    atomic_write_json(out / "ground_truth.json", results)
    atomic_write_text(args.md or out / "ground_truth.md", md)
    print(md)
    return results


def report_md(command: str, summaries: list, rows: list) -> str:
    from datetime import datetime, timezone
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    def mean_precision(methods: tuple[str, ...]) -> str:
        vals = [r[4] for r in rows if r[1] in methods]
        return f"{sum(vals) / max(1, len(vals)):.3f}"
    searched = [r for r in rows if r[1] != "learned"]
    mech = sum(r[7] == "yes" for r in searched)
    lines = [f"`{command}` ({when})", "",
             f"Reference: previous-token heads of layer 0 with score >= {PREV_THRESHOLD}, induction heads of layer 1 "
             f"with score >= {INDUCTION_THRESHOLD}. Redundant: reference heads whose single removal costs < "
             f"{REDUNDANT_TOLERANCE} test accuracy.", "",
             table(["seed", "toy steps", "copy acc", "prev-token score L0H0..3", "current-token score L0H0..3",
                    "induction score L1H0..3",
                    "reference", "redundant", "test acc full / none", "single-removal drops >= 0.01"], summaries),
             "", table(["seed", "method", "heads", "size", "precision", "chance precision", "recall", "mechanism",
                        "chance of mechanism", "prev / ind heads", "outside the reference (strongest score)",
                        "test acc", "U", "test items", "verdict"], rows), "",
             f"Searched circuits (warm and cold) holding the mechanism: {mech} of {len(searched)}. Mean precision: "
             f"searched {mean_precision(('warm', 'cold'))}, warm {mean_precision(('warm',))}, "
             f"cold {mean_precision(('cold',))}, learned {mean_precision(('learned',))}."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
