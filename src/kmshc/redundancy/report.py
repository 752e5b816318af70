"""``report.md``, ``knockout.png`` and ``mix.png`` of a redundancy run (docs/redundancy.md)."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # before pyplot: headless servers
import matplotlib.pyplot as plt  # noqa: E402

from kmshc.redundancy.disjoint import Analysis, Dynamics, Mix, Point  # noqa: E402
from kmshc.search.certificate import Estimate  # noqa: E402
from kmshc.types import atomic_write_bytes, atomic_write_text  # noqa: E402


def _save(fig, path: Path) -> Path:
    buf = io.BytesIO()  # render in memory, then temp file + rename: never half a PNG
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path


def _band(ax, xs: Sequence[int], ests: Sequence[Estimate], label: str, marker: str = "o") -> None:
    """Recovery points with their one-sided bounds as a shaded band (an unbounded side is not drawn)."""
    ys = [e.recovery if e.recovery is not None else float("nan") for e in ests]
    lo = [e.lower if e.lower is not None else y for e, y in zip(ests, ys)]
    hi = [e.upper if e.upper is not None else y for e, y in zip(ests, ys)]
    line, = ax.plot(xs, ys, marker=marker, label=label)
    ax.fill_between(xs, lo, hi, alpha=0.2, color=line.get_color())


def _targets(ax, a: Analysis) -> None:
    ax.axhline(a.epsilon, color="k", ls="--", lw=1, label=f"ε = {a.epsilon:.3g}")
    ax.axhline(a.epsilon - a.tau, color="k", ls=":", lw=1, label=f"ε − τ = {a.epsilon - a.tau:.3g}")
    ax.set_ylabel(f"recovery r ({a.metric}, {a.split}, n = {a.n})")


def knockout_plot(a: Analysis, path: Path) -> Path:
    """Recovery of ``M \\ (C1 ∪ … ∪ Ck)`` and of ``C1 ∪ … ∪ Ck`` against ``k``."""
    fig, ax = plt.subplots(figsize=(6, 4))
    ks = list(range(len(a.knockouts)))
    _band(ax, ks, [p.estimate for p in a.knockouts], "knocked out: M \\ (C1 ∪ … ∪ Ck)")
    if a.unions:
        _band(ax, ks[1:], [p.estimate for p in a.unions], "only C1 ∪ … ∪ Ck active", marker="s")
    _targets(ax, a)
    ax.set_xticks(ks)
    ax.set_xlabel("k: circuits found so far")
    ax.set_title("How many circuits must go before the task fails")
    ax.legend(fontsize=8)
    return _save(fig, path)


def mix_plot(d: Dynamics, a: Analysis, path: Path) -> Path:
    """Two panels: ``C1`` plus the first ``j`` heads of ``C2`` (and those heads alone), and the reverse."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, m in zip(axes, (d.forward, d.reverse)):
        _band(ax, m.sizes, m.with_base, f"all of {m.base} + first j of {m.added}")
        _band(ax, m.sizes, m.alone, f"first j of {m.added} alone", marker="s")
        _targets(ax, a)
        ax.set_xlabel(f"j: heads of {m.added} added (most important first)")
        ax.legend(fontsize=8)
    fig.suptitle(f"Mixing C1 and C2: {d.kind} (union − better one = {d.diff:+.4f} in {a.metric})")
    return _save(fig, path)


def _est(e: Estimate) -> str:
    return f"{e.recovery} [{e.lower}, {e.upper}] (accuracy {e.accuracy})"


def _points(title: str, points: Sequence[Point]) -> list[str]:
    rows = [f"### {title}", "", "| set | heads | recovery [bounds] | verdict |", "|---|---|---|---|"]
    rows += [f"| {p.label} | {p.size} | {_est(p.estimate)} | {p.verdict or ''} |" for p in points]
    return rows + [""]


def _mix_table(m: Mix) -> list[str]:
    rows = [f"{m.base} + first j of {m.added} (order: {', '.join(m.order)}):", "",
            f"| j | {m.base} + j heads | j heads alone |", "|---|---|---|"]
    rows += [f"| {j} | {_est(w)} | {_est(o)} |" for j, w, o in zip(m.sizes, m.with_base, m.alone)]
    return rows + [""]


def report_text(res) -> str:
    """The markdown report of a :class:`~kmshc.redundancy.run.Redundancy`."""
    lines = ["# Redundant circuits", "", f"{len(res.circuits)} disjoint sufficient circuit(s). "
             f"Stopped: {res.stop} ({res.why}).", ""]
    learned = set(res.learned or ())
    for k, f in enumerate(res.circuits):
        lines += [f"## C{k + 1}: {len(f.heads)} heads", "", f"`{', '.join(f.heads)}`", "",
                  f"File: `{f.path}`; search evaluations: {f.evaluations}."]
        if res.learned is not None:
            lines.append(f"Overlap with the learned set ({len(learned)} heads): {len(learned & set(f.heads))}.")
        lines += ["", "```", *(f.certificate.summary() if f.certificate else ["no certificate"]), "```", ""]
    a: Analysis | None = res.analysis
    if a is None:
        return "\n".join(lines) + "\n"
    lines += ["## Analysis", "", f"On the {a.split} split (n = {a.n}, metric {a.metric}, bounds at "
              f"{a.confidence:.0%} like the certificate): S(M) = {a.full.value}, S(∅) = {a.baseline.value}.", ""]
    lines += ["Pairwise overlaps |Ci ∩ Cj| (off the diagonal: 0 by construction):", ""]
    lines += ["| | " + " | ".join(p.label for p in a.alone) + " |", "|---" * (len(a.alone) + 1) + "|"]
    lines += [f"| {p.label} | " + " | ".join(str(v) for v in row) + " |" for p, row in zip(a.alone, a.overlaps)]
    lines += [""] + _points("Each circuit alone", a.alone) + _points("Only the union active", a.unions)
    lines += _points("Knock-out curve", a.knockouts)
    lines += [f"The rest stops recovering ε − τ with confidence after knocking out "
              f"{_count(a.circuits_to_lose)}; it collapses after {_count(a.circuits_to_fail)}.", "",
              "![knock-out curve](knockout.png)", ""]
    if a.dynamics:
        d = a.dynamics
        lines += ["## Mixing C1 and C2", "", f"Verdict: **{d.kind}**: the union C1 ∪ C2 minus the better circuit "
                  f"alone = {d.diff:+.4f} ({a.metric}); one-sided p = {d.p_additive} (above), "
                  f"{d.p_interfering} (below).", ""]
        lines += _mix_table(d.forward) + _mix_table(d.reverse) + ["![mix plot](mix.png)", ""]
    return "\n".join(lines) + "\n"


def _count(k: int | None) -> str:
    return "none of the circuits found (within the chain)" if k is None else f"{k} circuit(s)"


def write_report(res, out: Path) -> list[Path]:
    """Write ``report.md`` and the plots into ``out``; returns the paths written."""
    paths = [out / "report.md"]
    atomic_write_text(paths[0], report_text(res))
    if res.analysis is not None:
        paths.append(knockout_plot(res.analysis, out / "knockout.png"))
        if res.analysis.dynamics is not None:
            paths.append(mix_plot(res.analysis.dynamics, res.analysis, out / "mix.png"))
    return paths
