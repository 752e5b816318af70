"""The tables, figures and goal checks of ``bench/rankers.py``, from its step JSONs (no model)."""
from __future__ import annotations

from pathlib import Path
from statistics import mean, stdev

from common import table

from kmshc.compare.curves import Curve, mean_curve

EVALS_GOAL = 2.0       # warm search evaluations at most this many times the floor |C| + 1
PRECISION_GOAL = 0.8   # toy: precision of the learned circuit against the known mechanism


def curve_of(d: dict) -> Curve:
    return Curve(d["label"], d["n_heads"], tuple(d["ks"]), tuple(d["scores"]), tuple(d["faithfulness"]),
                 d["cpr"], d["cmd"])


def ms(values: list[float], digits: int = 3) -> str:
    """``mean ± sd`` over seeds (the mean alone for one seed; ``-`` for none)."""
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{mean(values):.{digits}f} ± {stdev(values):.{digits}f}"


def stats(recs: list[dict], ablations: list[str]) -> dict:
    """One ranking's numbers over its seeds: CPR, CMD and the largest faithfulness per ablation, cost."""
    out = {"seeds": len(recs), "forwards": [r["example_forwards"] for r in recs],
           "wall": [r["wall_s"] for r in recs]}
    for ab in ablations:
        curves = [r["curves"][ab] for r in recs if ab in r["curves"]]
        out[ab] = {"cpr": [c["cpr"] for c in curves], "cmd": [c["cmd"] for c in curves],
                   "max_f": max((max(c["faithfulness"]) for c in curves), default=None)}
    return out


def means(st: dict[str, dict], ab: str, key: str) -> dict[str, float]:
    return {n: mean(s[ab][key]) for n, s in st.items() if s[ab][key]}


def overshooting(st: dict[str, dict], ab: str) -> list[str]:
    """Rankings whose CPR beats the lowest-CMD ranking's while their CMD is higher, their curves
    passing 1: the top-k circuits do better than the full model, which CPR rewards and CMD does not."""
    cpr, cmd = means(st, ab, "cpr"), means(st, ab, "cmd")
    if not cmd:
        return []
    best = min(cmd, key=cmd.get)
    return [f"{n} (CPR {cpr[n]:.3f} > {cpr[best]:.3f} of {best}, CMD {cmd[n]:.3f} > {cmd[best]:.3f}, "
            f"curve up to f = {st[n][ab]['max_f']:.2f})"
            for n in cmd if n != best and cpr[n] > cpr[best] and cmd[n] > cmd[best] and st[n][ab]["max_f"] > 1]


def peak(max_f: float | None) -> str:
    return "-" if max_f is None else f"{max_f:.2f}"


def search_cells(s: dict | None, forwards: float | None) -> list:
    if s is None:
        return ["-"] * 7
    floor = s["size"] + 1
    total = None if forwards is None else forwards + s["example_forwards"]
    verdict = s["verdict"] or "-"
    return [s["evaluations"], floor, f"{s['example_forwards']:.0f}", "-" if total is None else f"{total:.0f}",
            s["size"], verdict + (" (capped)" if s.get("capped") else ""),
            f"{s['wall_s']:.0f}" if s.get("wall_s") is not None else "-"]


def toy_cells(recs: list[dict], s: dict | None) -> list:
    def pr(key: str) -> str:
        got = [r["toy"][key] for r in recs if r.get("toy") and r["toy"].get(key)]
        if not got:
            return "-"
        return f"{ms([g['precision'] for g in got], 2)} / {ms([g['recall'] for g in got], 2)}"
    mech = [r["toy"]["top"]["mechanism"] for r in recs if r.get("toy")]
    searched = f"{s['toy']['precision']:.2f} / {s['toy']['recall']:.2f}" if s and s.get("toy") else "-"
    return [pr("top"), f"{sum(mech)}/{len(mech)}", pr("start"), searched]


def task_table(task: str, steps: dict[str, list[dict]], searches: dict[str, dict], base: dict, ks: list[int],
               toy: bool) -> str:
    """The markdown section of one task: the table, the curve grid and the overshooting rankings."""
    abs_ = list(base["ablations"])
    st = {n: stats(recs, abs_) for n, recs in steps.items() if recs}
    headers = ["ranking", "seeds"] + [f"{m} ({ab})" for ab in abs_ for m in ("CPR", "CMD", "max f")] + [
        "example forwards", "ranking s", "s0 search: evaluations", "floor (size + 1)", "search forwards",
        "route total", "circuit size", "verdict", "search s"]
    headers += ["top-r P / R", "mechanism in top-r", "own set P / R", "searched P / R"] if toy else []
    rows = []
    for n, s in st.items():
        row = [n, s["seeds"]] + [x for ab in abs_ for x in (ms(s[ab]["cpr"]), ms(s[ab]["cmd"]), peak(s[ab]["max_f"]))]
        seed0 = next((r for r in steps[n] if r["seed"] == 0), None)
        row += [ms(s["forwards"], 0), ms(s["wall"], 0)]
        row += search_cells(searches.get(n), seed0 and seed0["example_forwards"])
        rows.append(row + (toy_cells(steps[n], searches.get(n)) if toy else []))
    n_heads = base["n_layers"] * base["n_heads"]
    scored = min(base["items"] or base["test_items"], base["test_items"])
    notes = "".join(f"; {a}: {why}" for a, why in base["notes"].items())
    lines = [f"### {task}", "", f"Curves on the first {scored} of {base['test_items']} test items, at "
             f"k = {', '.join(map(str, ks))} of {n_heads} heads; ablations: {', '.join(abs_) or 'none'}{notes}",
             "", table(headers, rows), ""]
    for ab in abs_:
        over = overshooting(st, ab)
        lines.append(f"- Overshoots ({ab}): " + ("; ".join(over) if over else "none (no ranking with a higher CPR "
                                                   "than the lowest-CMD ranking's curves past 1)"))
    return "\n".join(lines) + "\n"


def figures(task: str, steps: dict[str, list[dict]], ablations: list[str], out: Path) -> list[Path]:
    """One figure per task and ablation: every ranking's curve, averaged over its seeds."""
    from kmshc.compare.plots import faithfulness_curves
    paths = []
    for ab in ablations:
        curves = [mean_curve([curve_of(r["curves"][ab]) for r in recs], f"{n} ({len(recs)} seeds)")
                  for n, recs in steps.items() if recs and all(ab in r["curves"] for r in recs)]
        if curves:
            path = out / f"{task}_curves_{ab}.png"
            faithfulness_curves(curves, path, title=f"{task}: top-k circuits of each ranking ({ab} ablation, margin)")
            paths.append(path)
    return paths


def met(ok: bool) -> str:
    return "met" if ok else "missed"


def goal_checks(task: str, steps: dict[str, list[dict]], searches: dict[str, dict], primary: str | None) -> list[str]:
    """Per task, each goal as one line ending in met / missed (or why it was not measured)."""
    st = {n: stats(recs, [primary] if primary else []) for n, recs in steps.items() if recs}
    out = []
    if "gates" not in st or primary is None:
        return [f"{task}: no learned gates or no curves: the gate goals are not measured"]
    cpr, cmd = means(st, primary, "cpr"), means(st, primary, "cmd")
    lowest = min(cmd, key=cmd.get)
    out.append(f"{task}: learned gates have the lowest CMD ({primary}): gates {cmd['gates']:.3f}, lowest {lowest} "
               f"{cmd[lowest]:.3f}: {met(lowest == 'gates' or cmd[lowest] == cmd['gates'])}")
    beat = [n for n in cmd if n != "gates" and cpr[n] > cpr["gates"] and cmd[n] < cmd["gates"]]
    out.append(f"{task}: no other ranking beats the gates on both CPR and CMD: "
               f"{'none does' if not beat else ', '.join(beat) + (' does' if len(beat) == 1 else ' do')}: "
               f"{met(not beat)}")
    for n, s in searches.items():
        ratio = s["evaluations"] / (s["size"] + 1)
        goal = "" if n == "gates" else " (for comparison)"
        out.append(f"{task}: warm search from {n}: {s['evaluations']} evaluations for |C| = {s['size']} "
                   f"({ratio:.2f}× the floor |C|+1; goal ≤ {EVALS_GOAL:g}×; certificate {s['verdict']}"
                   f"{', capped' if s.get('capped') else ''}){goal}: {met(ratio <= EVALS_GOAL)}")
    out.append(route_check(task, steps, searches))
    toy = toy_check(task, steps, searches)
    return out + ([toy] if toy else [])


def route_total(steps: dict[str, list[dict]], searches: dict[str, dict], name: str) -> float | None:
    seed0 = next((r for r in steps.get(name, []) if r["seed"] == 0), None)
    if seed0 is None or name not in searches:
        return None
    return seed0["example_forwards"] + searches[name]["example_forwards"]


def route_check(task: str, steps: dict[str, list[dict]], searches: dict[str, dict]) -> str:
    learned, fs = route_total(steps, searches, "gates"), route_total(steps, searches, "forward_selection")
    if learned is None or fs is None:
        return (f"{task}: learned route vs forward selection's: not measured (needs both rankings at seed 0 "
                "and their warm searches)")
    return (f"{task}: learned route (training + search) {learned:.0f} example forwards vs forward selection "
            f"(ranking + search) {fs:.0f} ({learned / fs:.2f}×; goal ≤ 1×): {met(learned <= fs)}")


def toy_check(task: str, steps: dict[str, list[dict]], searches: dict[str, dict]) -> str | None:
    """The toy: the learned circuit (every seed) and its warm search (seed 0) hold the mechanism at
    precision ≥ PRECISION_GOAL."""
    recs = [r for r in steps.get("gates", []) if r.get("toy") and r["toy"].get("start")]
    if not recs:
        return None
    own = [r["toy"]["start"] for r in recs]
    precision = mean(o["precision"] for o in own)
    ok = all(o["mechanism"] for o in own) and precision >= PRECISION_GOAL
    line = (f"{task}: learned circuits hold the mechanism at {sum(o['mechanism'] for o in own)}/{len(own)} seeds, "
            f"mean precision {precision:.2f} (goal: every seed, ≥ {PRECISION_GOAL:g}): {met(ok)}")
    s = searches.get("gates", {}).get("toy")
    if s:
        ok = s["mechanism"] and s["precision"] >= PRECISION_GOAL
        line += (f"; warm-searched circuit (seed 0) {' '.join(s['heads'])}: mechanism "
                 f"{'yes' if s['mechanism'] else 'no'}, precision {s['precision']:.2f}: {met(ok)}")
    return line
