"""Cost of a circuit: cold Search-K-MSHC against learned gates → refinement, from finished runs.

For each case it reads ``<train run>/circuit_learned.json`` (gate training),
``<train run>/circuit_searched.json`` (the warm refinement) and ``<cold run>/circuit_searched.json``.
One evaluation is one pass over the scored (val) split; a training step counts as 3 forward
passes of its batch, i.e. ``3 · batch / n_val`` evaluations. The floor is ``|C| + 1``: the
evaluations that checking sufficiency and every single-head removal of ``C`` needs.
Goals (issue #6): warm ≤ 2× its floor, and ≥ 5× fewer evaluations than cold.

    python train.py fit --config configs/train/blimp.yaml            # -> runs/blimp
    python search.py --config configs/search/blimp.yaml --mode warm --from_run runs/blimp
    python search.py --config configs/search/blimp.yaml --name blimp-cold-keep
    python bench/search_cost.py --case det_noun_1 runs/blimp runs/blimp-cold-keep
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, parse, parser, peak_rss_mb, report, table  # noqa: E402

from kmshc.experiment import Experiment  # noqa: E402
from kmshc.types import KmshcError  # noqa: E402

LEARNED, SEARCHED = "circuit_learned.json", "circuit_searched.json"


def read(path: Path) -> dict | None:
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError as e:
        raise KmshcError(f"{path}: not a circuit JSON ({e})") from None


def progress(run_dir: Path) -> dict | None:
    """An unfinished search's ``search_state.json``: evaluations and wall time so far, current size."""
    state = read(run_dir / "search_state.json")
    if state is None or state.get("done"):
        return None
    size = None
    for ev in state.get("trace", []):
        if ev.get("event") == "threshold":
            size = ev.get("start")
        elif size is not None and "bundle" in ev and ev.get("event", "").startswith("remove"):
            size -= len(ev["bundle"])
        elif size is not None and ev.get("event") in ("drop_head", "remove_head"):
            size -= 1
        elif size is not None and ev.get("event") == "restored_in_gate_order":
            size += ev.get("added", 0)
    return {"evaluations": len(state.get("log", [])), "wall_time_s": state.get("wall_time_s", float("nan")),
            "size": size}


def n_val(circ: dict) -> int:
    """Size of the split the search scored: from the circuit, else rebuilt from its experiment."""
    val = circ.get("scores", {}).get("val", {})
    if isinstance(val.get("n"), int):
        return val["n"]
    return len(Experiment(**circ["config"]["experiment"]).splits["val"])


def training_equivalents(learned: dict, n: int) -> tuple[float, int, int]:
    """``(evaluation equivalents, steps, batch)`` of a gate-training run."""
    steps = int(learned.get("steps") or learned["config"]["train"]["trainer"]["max_steps"])
    batch = int(learned["config"]["train"].get("data", {}).get("batch_size", 16))
    return 3 * steps * batch / n, steps, batch


def row(label: str, method: str, circ: dict, extra_evals: float = 0.0, extra_s: float = 0.0) -> list:
    size = len(circ["heads"])
    ev = circ.get("evaluations", 0)
    cert = circ.get("certificate") or {}
    test = circ.get("scores", {}).get("test", {}).get("accuracy", float("nan"))
    verified = cert.get("verified", "-")
    return [label, method, ev, f"{ev / (size + 1):.1f}×", cert.get("evaluations", "-"),
            round(ev + extra_evals, 1), round(circ.get("wall_time_s", float("nan")) + extra_s), size, test, verified,
            circ.get("peak_rss_mb", "-")]


def rss_note(values: list) -> str:
    known = [v for v in values if isinstance(v, (int, float))]
    return f"peak RSS {max(known):.0f} MiB (largest run)" if known else f"peak RSS {peak_rss_mb():.0f} MiB (this script)"


def main(argv: list[str] | None = None) -> dict:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--case", nargs=3, action="append", metavar=("LABEL", "TRAIN_RUN", "COLD_RUN"), required=True)
    args = parse(p, argv, __file__)
    rows, notes, out = [], [], {}
    for label, train_dir, cold_dir in args.case:
        learned, warm = read(ROOT / train_dir / LEARNED), read(ROOT / train_dir / SEARCHED)
        cold = read(ROOT / cold_dir / SEARCHED)
        missing = [str(Path(d) / f) for d, f, c in [(train_dir, LEARNED, learned), (train_dir, SEARCHED, warm),
                                                    (cold_dir, SEARCHED, cold)] if c is None]
        if missing:
            notes.append(f"{label}: missing {', '.join(missing)} (not finished when this ran); unfinished searches are shown with their evaluations so far.")
        train_eq = train_s = 0.0
        if learned is not None:
            n = n_val(warm or learned)
            train_eq, steps, batch = training_equivalents(learned, n)
            train_s = float(learned.get("wall_time_s", 0.0))
            rows.append([label, f"gate training ({steps} steps × batch {batch})", "-", "-", "-",
                         round(train_eq, 1), round(train_s), len(learned["heads"]),
                         learned.get("scores", {}).get("test", {}).get("accuracy", float("nan")), "-",
                         learned.get("peak_rss_mb", "-")])
        if warm is not None:
            rows.append(row(label, "warm: learned → refined", warm, train_eq, train_s))
        elif (running := progress(ROOT / train_dir)) is not None:
            rows.append([label, "warm (unfinished: so far)", f"≥ {running['evaluations']}", "-", "-",
                         f"≥ {running['evaluations'] + train_eq:.0f}", f"≥ {running['wall_time_s'] + train_s:.0f}",
                         "-", "-", "-", "-"])
            notes.append(f"{label}: the warm search had not finished; its evaluations are a lower bound.")
        if cold is not None:
            capped = " — stopped at its evaluation budget" if cold.get("capped") else ""
            rows.append(row(label, f"cold ({cold.get('semantics', 'keep')}){capped}", cold))
        elif (running := progress(ROOT / cold_dir)) is not None:
            cold = {"evaluations": running["evaluations"], "heads": [], "partial": True}
            rows.append([label, "cold (unfinished: so far)", f"≥ {running['evaluations']}", "-", "-",
                         f"≥ {running['evaluations']}", f"≥ {running['wall_time_s']:.0f}",
                         f"{running['size']} (so far)", "-", "-", "-"])
            notes.append(f"{label}: the cold search had not finished; its evaluations are a lower bound.")
        if warm is not None:
            floor = len(warm["heads"]) + 1
            w = warm["evaluations"]
            out[label] = {"warm_over_floor": w / floor}
            notes.append(f"{label}: warm spent {w} evaluations = {w / floor:.1f}× its floor |C|+1 = {floor} "
                         f"(goal ≤ 2×: {'met' if w <= 2 * floor else 'missed'}); with training "
                         f"({train_eq:.0f} evaluation equivalents) {w + train_eq:.0f}.")
            if cold is not None:
                c = cold["evaluations"]
                out[label].update(cold_over_warm=c / max(1, w), cold_over_warm_with_training=c / (w + train_eq))
                unfinished = cold.get("partial") or cold.get("capped")  # its count is a lower bound
                verdict = "met" if c >= 5 * w else ("not yet decided" if unfinished else "missed")
                bound = "≥ " if unfinished else ""
                notes.append(f"{label}: cold/warm evaluations {bound}{c / max(1, w):.1f}× (goal ≥ 5×: {verdict}); "
                             f"counting training {bound}{c / (w + train_eq):.1f}×.")
    notes.append(f"`evals / floor` divides by the floor, circuit size + 1; `total evals` adds gate training's evaluation equivalents to the warm search; `wall s` likewise adds "
                 f"training time. Verification evaluations are listed apart. `peak RSS MiB` is each run's own "
                 f"(recorded in its circuit file; '-' for runs made before it was recorded); "
                 f"{rss_note([r[-1] for r in rows])}.")
    headers = ["case", "method", "search evals", "evals / floor", "verify evals", "total evals", "wall s",
               "circuit size", "test S(C)", "verified", "peak RSS MiB"]
    report(args, "search_cost: cold vs learned → refined", table(headers, rows), notes)
    return out


if __name__ == "__main__":
    main()
