"""The report of ``kmshc compare``: the tables, the plots, CSV and the markdown page
(:func:`kmshc.entry.compare.run_compare` runs the command and writes them)."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Sequence

from kmshc.compare import plots
from kmshc.compare.entries import Entry, overlap_matrix
from kmshc.compare.tables import circuit_row, cross_analysis, pair_rows
from kmshc.types import KmshcError


def parse_shape(text: str) -> tuple[int, int]:
    try:
        n_layers, n_heads = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise KmshcError(f"--shape: expected LAYERSxHEADS like 30x9, got {text!r}") from None
    return n_layers, n_heads


def build(entries: Sequence[Entry], shape: tuple[int, int], strong: float = 0.5, super_: float = 0.9,
          rescored: dict | None = None) -> dict[str, Any]:
    """Everything the report shows, as one JSON-able dict."""
    circuits = [circuit_row(e) for e in entries]
    for row in circuits:
        if rescored and row["label"] in rescored:  # flat columns so CSV and markdown show them
            r = rescored[row["label"]]
            row.update(rescored_accuracy=r["accuracy"], rescored_ci=r["ci"], rescored_n=r["n"],
                       rescored_full_accuracy=r["full_accuracy"], rescored_empty_accuracy=r["empty_accuracy"])
    return {"shape": list(shape), "circuits": circuits, "pairs": pair_rows(entries, rescored),
            "analysis": cross_analysis(entries, shape[0], strong, super_)}


def write_plots(entries: Sequence[Entry], result: dict, out: Path) -> list[Path]:
    n_layers, n_heads = result["shape"]
    paths = []
    by_run: dict[Path, list[Entry]] = {}
    for e in entries:
        by_run.setdefault(e.path.parent, []).append(e)
    for run, es in by_run.items():  # one gate grid per run with gates and a searched circuit
        gates = next((e.gates for e in es if e.gates), None)
        for e in es:
            if gates and e.method != "learned":
                paths.append(plots.gate_grid(gates, e.circuit.heads, n_layers, n_heads,
                                             out / f"gates_{run.name}_{e.method}.png",
                                             title=f"{run.name}: gates; red squares = {e.method} circuit"))
    methods = result["analysis"]["methods"]
    per_task: dict[str, dict[str, list[float]]] = {}
    for m, info in methods.items():
        dists = {t: v["layer_distribution"] for t, v in info["tasks"].items()}
        paths.append(plots.layer_histogram(dists, out / f"layers_{m}.png", title=f"{m}: circuit heads per layer"))
        for t, d in dists.items():
            per_task.setdefault(t, {})[m] = d
        if len(info["tasks"]) > 1:
            for lvl in ("any", "weak", "strong"):
                ov = info["overlap"][lvl]
                paths.append(plots.overlap_heatmap(ov["jaccard"], ov["labels"], out / f"overlap_{m}_{lvl}.png",
                                                   title=f"{m}: {lvl} heads, Jaccard (shared heads)",
                                                   counts=ov["intersection"]))
    paths.append(plots.layer_distributions(per_task, out / "layer_distribution.png"))
    if 1 < len(entries) <= 40:
        ov = overlap_matrix({e.label: e.heads for e in entries})
        paths.append(plots.overlap_heatmap(ov["jaccard"], ov["labels"], out / "overlap_circuits.png",
                                           title="Jaccard between circuits"))
    return paths


def csv_text(rows: Sequence[dict]) -> str:
    if not rows:
        return ""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]), extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in r.items()})
    return buf.getvalue()


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.3f}"
    if isinstance(v, (list, tuple)) and len(v) == 2 and all(isinstance(x, (int, float)) for x in v):
        return f"[{v[0]:.3f}, {v[1]:.3f}]"
    return str(v)


def _table(rows: Sequence[dict], cols: Sequence[str]) -> str:
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_fmt(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def markdown(result: dict, images: Sequence[Path], out: Path, title: str) -> str:
    """The report; images are linked relative to ``out``."""
    a = result["analysis"]
    d = a["definitions"]
    cols = ["label", "task", "method", "seed", "size", "accuracy", "ci", "metric", "recovery", "recovery_lower",
            "full_accuracy", "threshold", "verdict", "epsilon_range", "evaluations", "wall_time_s"]
    if any("rescored_accuracy" in r for r in result["circuits"]):
        cols += ["rescored_n", "rescored_accuracy", "rescored_ci", "rescored_full_accuracy"]
    md = [f"# {title}", "", f"{len(result['circuits'])} circuits, model shape {result['shape'][0]} layers × "
          f"{result['shape'][1]} heads.", "", "## Circuits (test split, as recorded in each file; "
          "`rescored_*`: re-scored by `--rescore` with a 95% bootstrap interval)", "",
          _table(result["circuits"], cols), "",
          "## Learned vs searched (circuits of the same run)", ""]
    rows = [{"task": t, "pair": k, **v} for t, ks in a["learned_vs_searched"].items() for k, v in ks.items()]
    md += [_table(rows, ["task", "pair", "n_runs", "size_a", "size_b", "jaccard", "precision_a_vs_b",
                         "recall_a_vs_b"]) if rows else "No run holds two circuits.", ""]
    diffs = [{"pair": f"{p['a']} − {p['b']}", "diff": p["rescored_diff"]["diff"], "ci": p["rescored_diff"]["ci"]}
             for p in result["pairs"] if p.get("rescored_diff")]
    if diffs:
        md += ["Accuracy difference on the test split (`--rescore`), paired bootstrap 95% interval:", "",
               _table(diffs, ["pair", "diff", "ci"]), ""]
    md += [
           "## Seed stability and size", "",
           "Seed stability = mean pairwise Jaccard between the circuits of one task and method.", ""]
    rows = [{"method": m, "task": t, **{k: v[k] for k in ("n_circuits", "mean_size", "seed_stability",
                                                           "full_accuracy")}, **v["depth"]}
            for m, info in a["methods"].items() for t, v in info["tasks"].items()]
    md += [_table(rows, ["method", "task", "n_circuits", "mean_size", "seed_stability", "full_accuracy",
                         "early", "middle", "late", "mean_depth"]), "",
           "`early`/`middle`/`late`: share of circuit heads in the first/middle/last third of layers; "
           "`mean_depth`: mean layer / (L−1).", "",
           "## Weak, strong and super heads", "",
           f"`f_t(h)` = fraction of task t's circuits (one method) containing h. **strong**: f_t(h) ≥ "
           f"{d['strong']}. **weak**: 0 < f_t(h) < {d['strong']}. **super**: f_t(h) ≥ {d['super']} and h is "
           "strong in no other task (so super sets never overlap across tasks).", ""]
    for m, info in a["methods"].items():
        rows = [{"task": t, **{lvl: len(c[lvl]) for lvl in ("any", "weak", "strong", "super")},
                 "super heads": ", ".join(c["super"]) or "–"} for t, c in info["classes"].items()]
        md += [f"### {m}", "", _table(rows, ["task", "any", "weak", "strong", "super", "super heads"]), ""]
    if "faithfulness" in result:
        md += curves_section(curve_rows(result["faithfulness"]["curves"]), result["faithfulness"]["skipped"],
                               _table)
    if "diagnostics" in result:
        from kmshc.compare.head_scores import markdown_section as diagnostics_section
        md += diagnostics_section(result["diagnostics"], _table)
    md += ["## Plots", ""]
    md += [f"![{p.stem}]({p.relative_to(out).as_posix()})" for p in images]
    return "\n".join(md) + "\n"


def curve_rows(curves: dict[str, list[dict]]) -> list[dict[str, Any]]:
    """One row per ranking: CPR and CMD on each metric (for the report table)."""
    rows: dict[str, dict[str, Any]] = {}
    for m, cs in curves.items():
        for c in cs:
            rows.setdefault(c["label"], {"label": c["label"]}).update({f"cpr_{m}": c["cpr"], f"cmd_{m}": c["cmd"]})
    return list(rows.values())


def curves_section(rows: list[dict[str, Any]], skipped: list[str], table) -> list[str]:
    """Report lines: what CPR and CMD mean, then one row per ranking (``table(rows, cols)`` renders it)."""
    md = ["## Faithfulness curves (MIB-style)", "",
          "Each circuit's ranking of all heads (learned: by `log_alpha`; searched: its heads first) is cut to "
          "its top k heads on a grid of k; each point is normalised as (S(top-k) − S(∅)) / (S(M) − S(∅)) on "
          "the test split. **CPR** = area under that curve over the fraction of heads (higher is better); "
          "**CMD** = area between the curve and 1 (lower is better); MIB (Mueller et al. 2025). Computed on the "
          "mean log-prob margin and on accuracy.", "",
          table(rows, ["label", "cpr_margin", "cmd_margin", "cpr_accuracy", "cmd_accuracy"]) if rows
          else "No curve: no ranking had a gap between the full and the empty model.", ""]
    if skipped:
        md += ["Skipped (no gap to normalise by): " + "; ".join(skipped), ""]
    return md
