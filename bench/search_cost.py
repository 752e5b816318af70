"""Search cost: forward passes per certified circuit, from finished runs, one table per task.

Three routes to a circuit on the same experiment (model, task, splits, ablation):

* **learned, fixed-n**: gate training (``train.py``), then the warm search deciding every removal on
  the whole val split (``<learned run>/circuit_searched.json``);
* **learned, adaptive**: the same gates, warm search with ``--adaptive true`` (sequential decisions
  that stop scoring once a removal is clearly decided);
* **attribution**: ``kmshc rank --method attribution`` (one forward+backward pass over train), then
  the warm search started from that ranking.

Every stage is counted in **example forwards** (:mod:`kmshc.engine.cost`: one example through all decoder
layers; a backward counts like a forward), read from the run files: training from
``circuit_learned.json`` (its training steps and in-training validation), ranking from the rank run's
``gates.json``, search from ``circuit_searched.json`` and certificate from its ``verify_cost``.
``total`` = training + ranking + search: what finding the circuit costs; the certificate (same kind
of check for every route) is listed apart. Goals: fixed/adaptive search cost ≥ 3 with a circuit no
larger that still verifies; attribution total ≤ 1/2 of the learned route with the same decisions.

    bash scripts/search_cost.sh          # runs the adaptive and attribution routes, then this script
    python bench/search_cost.py --case ioi runs/analysis/ioi_s0 runs/analysis/ioi_s0-adaptive \\
        runs/analysis/ioi_s0-att [--case ...] [--cpr]
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, parse, parser, peak_rss_mb, report, table  # noqa: E402

from kmshc.rank.run import read_rank_record  # noqa: E402
from kmshc.engine.cost import CostRecord  # noqa: E402
from kmshc.search.certificate import Certificate  # noqa: E402
from kmshc.types import Circuit, KmshcError, read_circuit  # noqa: E402

LEARNED, SEARCHED = "circuit_learned.json", "circuit_searched.json"
FIXED, ADAPTIVE, ATTRIBUTION = "learned + warm, fixed-n", "learned + warm, adaptive", "attribution + search"
ADAPTIVE_GOAL, ATTRIBUTION_GOAL = 3.0, 0.5


@dataclass(frozen=True)
class Route:
    """One route's costs (example forwards; ``None``: the stage does not apply) and its circuit."""

    name: str
    search: float
    certificate: float
    evaluations: int
    wall_s: float
    size: int
    verified: bool | None
    recovery: float | None
    adaptive: bool
    training: float | None = None
    ranking: float | None = None
    cpr: float | None = None
    label: str = ""  # the row's name when it says more than the route (which ranking)

    @property
    def total(self) -> float:
        """What finding the circuit cost: training or ranking, plus the search (not the certificate)."""
        return (self.training or 0.0) + (self.ranking or 0.0) + self.search


@dataclass(frozen=True)
class Ratios:
    """``search_saving``: fixed-n search cost / adaptive; ``attribution_share``: attribution total /
    the learned route's total with the same decisions (``None`` where a route is missing)."""

    search_saving: float | None
    attribution_share: float | None


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def ratios(routes: dict[str, Route]) -> Ratios:
    fixed, adaptive, att = routes.get(FIXED), routes.get(ADAPTIVE), routes.get(ATTRIBUTION)
    rival = (adaptive if att is not None and att.adaptive else fixed)
    return Ratios(search_saving=ratio(fixed and fixed.search, adaptive and adaptive.search),
                  attribution_share=ratio(att and att.total, rival and rival.total))


def verdicts(routes: dict[str, Route], r: Ratios) -> list[str]:
    """One line per goal: met or missed, with the numbers it rests on."""
    out = []
    fixed, adaptive, att = routes.get(FIXED), routes.get(ADAPTIVE), routes.get(ATTRIBUTION)
    if fixed and adaptive and r.search_saving is not None:
        ok = r.search_saving >= ADAPTIVE_GOAL and adaptive.size <= fixed.size and adaptive.verified is True
        out.append(f"adaptive: search {r.search_saving:.2f}× cheaper than fixed-n (goal ≥ {ADAPTIVE_GOAL:g}×), "
                   f"circuit {adaptive.size} vs {fixed.size} heads, verified {adaptive.verified}: "
                   f"{'met' if ok else 'missed'}")
    if att and r.attribution_share is not None:
        rival = adaptive if att.adaptive else fixed
        ok = r.attribution_share <= ATTRIBUTION_GOAL and att.verified is True
        out.append(f"attribution route ({att.label or att.name}): total {r.attribution_share:.2f} of the learned route with the same decisions "
                   f"({rival.name}; goal ≤ {ATTRIBUTION_GOAL:g}), verified {att.verified}; circuit {att.size} vs "
                   f"{rival.size} heads, CPR {table_cell(att.cpr)} vs {table_cell(rival.cpr)}: {'met' if ok else 'missed'}")
    return out


def table_cell(x) -> str:
    return "-" if x is None else f"{x:.3g}"


def fmt(x):
    """``-`` for a stage that does not apply; numbers are left to :func:`common.table`'s format."""
    return "-" if x is None else x


# ---------------------------------------------------------------------------- reading the runs
def searched_route(name: str, circ: Circuit, *, training: float | None = None, ranking: float | None = None,
                   extra_wall_s: float = 0.0, where: str) -> Route:
    """A :class:`Route` from a search's circuit (certificate and verify cost embedded)."""
    if circ.example_forwards is None:
        raise KmshcError(f"{where}: no 'example_forwards' recorded; rerun the search to record its cost")
    cert = Certificate.from_dict(circ.certificate, where=f"{where}: certificate") if circ.certificate else None
    verify = CostRecord.from_dict(circ.extra.get("verify_cost"), where=f"{where}: field 'verify_cost'")
    search_cfg = circ.config.get("search", {})
    return Route(name=name, training=training, ranking=ranking, search=circ.example_forwards,
                 certificate=verify.example_forwards, evaluations=circ.evaluations,
                 wall_s=float(circ.extra.get("wall_time_s", 0.0)) + extra_wall_s, size=len(circ.heads),
                 verified=cert.verified if cert else None, recovery=cert.circuit.recovery if cert else None,
                 adaptive=bool(search_cfg.get("adaptive", False)))


def read_routes(learned_dir: Path, adaptive_dir: Path, att_dir: Path,
                fixed_dir: Path | None = None) -> tuple[dict[str, Route], dict, list[str]]:
    """``(routes, {route name: (searched circuit, its path)}, notes)``; a missing file is noted, not fatal.

    The fixed-n search is the one in ``learned_dir`` unless ``fixed_dir`` (its ``--out``) is given."""
    routes, circuits, notes = {}, {}, []
    learned = read_circuit(learned_dir / LEARNED) if (learned_dir / LEARNED).is_file() else None
    if learned is not None and learned.example_forwards is None:
        raise KmshcError(f"{learned_dir / LEARNED}: no 'example_forwards'; retrain with this kmshc to count it")
    train_s = float(learned.extra.get("wall_time_s", 0.0)) if learned else 0.0
    specs = [(FIXED, fixed_dir or learned_dir), (ADAPTIVE, adaptive_dir), (ATTRIBUTION, att_dir)]
    for name, d in specs:
        path = d / SEARCHED
        needs = [path] + ([learned_dir / LEARNED] if name != ATTRIBUTION and learned is None else [])
        if not all(p.is_file() for p in needs):
            notes.append(f"{name}: missing {', '.join(str(p) for p in needs if not p.is_file())} (not run or not finished)")
            continue
        circ = read_circuit(path)
        if name == ATTRIBUTION:
            rank = read_rank_record(d)
            route = searched_route(name, circ, ranking=rank.cost.example_forwards,
                                   extra_wall_s=rank.wall_time_s, where=str(path))
            unit = "rounds" if rank.method == "forward_selection" else "steps"
            how = rank.method.replace("_", " ") + (f" ({rank.steps} {unit})" if rank.steps > 1 else "")
            routes[name] = replace(route, label=f"{how} + search")
        else:
            routes[name] = searched_route(name, circ, training=learned.example_forwards, extra_wall_s=train_s,
                                          where=str(path))
        circuits[name] = (circ, path)
    return routes, circuits, notes


def cprs(circuits: dict[str, tuple[Circuit, Path]]) -> dict[str, float]:
    """CPR (margin) of each searched circuit's ranking: its heads first, then the rest by the
    ``log_alpha`` of the gates it started from (learned gates or attribution). Loads the model."""
    from kmshc.compare.entries import Entry
    from kmshc.compare.curve_runs import compare_curves
    entries = []
    for name, (circ, path) in circuits.items():
        source = Path(str(circ.extra.get("source") or path))  # curve_runs reads log_alpha next to the path
        source = source if source.is_absolute() else ROOT / source
        entries.append(Entry(label=name, path=source.parent / path.name, circuit=circ, method="searched"))
    return {c["label"]: c["cpr"] for c in compare_curves(entries)["curves"].get("margin", [])}


# ---------------------------------------------------------------------------- the table
HEADERS = ["route", "training", "ranking", "search", "certificate", "total", "fixed/this search",
           "total / learned", "evaluations", "wall s", "circuit size", "verified", "recovery (test)", "CPR"]


def rows(routes: dict[str, Route], r: Ratios) -> list[list]:
    fixed = routes.get(FIXED)
    out = []
    for name in (FIXED, ADAPTIVE, ATTRIBUTION):
        if (x := routes.get(name)) is None:
            continue
        saving = ratio(fixed and fixed.search, x.search)
        share = r.attribution_share if name == ATTRIBUTION else None
        out.append([x.label or name, fmt(x.training), fmt(x.ranking), x.search, x.certificate, x.total, fmt(saving), fmt(share), x.evaluations, round(x.wall_s),
                    x.size, fmt(x.verified), fmt(x.recovery), fmt(x.cpr)])
    return out


def main(argv: list[str] | None = None) -> dict[str, Ratios]:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--case", nargs=4, action="append", required=True,
                   metavar=("TASK", "LEARNED_RUN", "ADAPTIVE_OUT", "ATTRIBUTION_RUN"),
                   help="a task's runs: train.py run (with its fixed-n warm search), the adaptive search's --out "
                        "folder, the kmshc rank run (with its search)")
    p.add_argument("--fixed_suffix", default="",
                   help="the fixed-n search is in LEARNED_RUN + this suffix (its --out), e.g. '-fixed', when the "
                        "run's own search is the adaptive one")
    p.add_argument("--cpr", action="store_true", help="also score each circuit's faithfulness curve (loads the model)")
    args = parse(p, argv, __file__)
    out = {}
    for label, *dirs in args.case:
        fixed = ROOT / (dirs[0] + args.fixed_suffix) if args.fixed_suffix else None
        routes, circuits, notes = read_routes(*(ROOT / d for d in dirs), fixed_dir=fixed)
        if args.cpr and circuits:
            scored = cprs(circuits)
            routes = {k: replace(v, cpr=scored.get(k)) for k, v in routes.items()}
        out[label] = r = ratios(routes)
        notes = verdicts(routes, r) + notes + [
            "Costs in example forwards (one example through all decoder layers; backward counted like forward). "
            "`total` = training + ranking + search; the certificate (test split) is listed apart. "
            "`total / learned`: against the learned route with the same decisions (fixed-n or adaptive). "
            "`wall s` adds training or ranking time to the search's. "
            f"`recovery (test)`: the certificate's r(C); CPR on the margin (docs/curves.md). Peak RSS {peak_rss_mb():.0f} MiB (this script)."]
        report(args, f"search_cost: forward passes per certified circuit ({label})", table(HEADERS, rows(routes, r)),
               notes)
    return out


if __name__ == "__main__":
    main()
