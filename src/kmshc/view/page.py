"""The report's HTML: one function per section, each from gathered dataclasses to a ``<section>``.

Sections carry fixed ids (``SECTIONS``) so that tests and readers can find them; the page's style
and script live in :mod:`kmshc.view.assets`.
"""
from __future__ import annotations

import json
from html import escape
from typing import Optional, Sequence

from kmshc.view.assets import page
from kmshc.view.faith import Curves
from kmshc.view.gather import CertView, Grid, Summary, intervals
from kmshc.view.probe import HeadProbe
from kmshc.view.svg import bars_svg, fmt, head_grid_svg, intervals_svg, line_chart_svg
from kmshc.view.trace import Trace

SECTIONS = ("summary", "grid", "certificate", "curves", "heads", "trace")
SCORE_NAMES = {"previous_token": "previous-token", "duplicate_token": "duplicate-token", "induction": "induction",
               "answer": "attention to answer", "direct_effect": "direct effect"}


def table(header: Sequence[str], rows: Sequence[Sequence[object]], css: str = "") -> str:
    """An HTML table; cells are escaped unless they are already markup (``Markup``)."""
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c if isinstance(c, Markup) else escape(str(c))}</td>" for c in r) + "</tr>"
                   for r in rows)
    return f'<table class="{css}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


class Markup(str):
    """A string that is already HTML."""


def section(sid: str, title: str, *parts: str) -> str:
    return f'<section id="{sid}"><h2>{escape(title)}</h2>\n' + "\n".join(parts) + "\n</section>"


def summary_section(s: Summary) -> str:
    badge = {"verified": "ok", "refuted": "bad"}.get(s.verdict, "meh")
    rows = [("model", s.model), ("task", s.task), ("ablation", s.ablation), ("scorer / metric", f"{s.scorer} / {s.metric}"),
            ("ε (target) and τ (tolerance)", f"{s.epsilon} ± {fmt(s.tau, 3) if s.tau is not None else '—'}"),
            ("method", s.method), ("circuit", f"{len(s.heads)} of {s.n_heads_total} heads: {' '.join(s.heads) or '(none)'}"),
            ("search cost", f"{s.evaluations} evaluations, {fmt(s.example_forwards, 0)} example forwards")]
    cmds = "".join(f"<pre>{escape(c)}</pre>" for c in s.commands) or "<p>(no recorded command)</p>"
    return section("summary", "1. Summary",
                   f'<p class="verdict {badge}"><b>{escape(s.verdict)}</b>: {escape(s.reason)}</p>',
                   table(("", ""), rows, "kv"), "<h3>Reproduce</h3>", cmds)


def grid_section(grid: Grid) -> str:
    n_in = sum(c.in_circuit for c in grid.cells)
    has_attr = any(c.attribution is not None for c in grid.cells)
    return section("grid", "2. Head grid",
                   f"<p>{grid.n_layers} layers × {grid.n_heads} heads. Colour: learned gate (white 0, dark blue 1, "
                   f"grey: no gate); red outline: the {n_in} circuit heads"
                   + ("; dot: |attribution|" if has_attr else "") + ". Hover a cell for its numbers.</p>",
                   f'<div class="scroll">{head_grid_svg(grid)}</div>')


def certificate_section(view: Optional[CertView]) -> str:
    if view is None:
        return section("certificate", "3. Certificate", "<p>This circuit has no certificate (a learned circuit). "
                       "Certify it with <code>kmshc verify CIRCUIT</code>.</p>")
    c, eps, tau = view.circuit, view.epsilon, view.tau
    badge = {"verified": "ok", "refuted": "bad"}.get(view.verdict, "meh")
    head = (f'<p class="verdict {badge}"><b>{escape(view.verdict)}</b> on {escape(view.split)} (n = {view.n}, metric '
            f"{escape(view.metric)}, {view.confidence:.0%}): {escape(view.reason)}.</p>"
            f"<p>r(C) = {fmt(c.recovery)}, lower bound {fmt(c.lower)} (must be ≥ ε − τ = {eps - tau:.3g}); "
            f"epsilon_range = {escape(str(view.epsilon_range or 'none'))}; full model {fmt(view.full.value)}, "
            f"all heads ablated {fmt(view.baseline.value)}.</p>")
    removals = table(("head", "recovery without it", "lower", "upper", "class", "p", "p (Holm)"),
                     [(r.head, fmt(r.estimate.recovery), fmt(r.estimate.lower), fmt(r.estimate.upper), r.cls,
                       fmt(r.p_value, 4), fmt(r.p_holm, 4)) for r in view.removals])
    k = view.knockout
    ko = (f"<p>Knock-out S(M \\ C): recovery {fmt(k.estimate.recovery)} [{fmt(k.estimate.lower)}, "
          f"{fmt(k.estimate.upper)}] → <b>{escape(k.verdict)}</b>.</p>") if k else "<p>No knock-out recorded.</p>"
    controls = table(("control", "heads", "verified (must be no)", "reason"),
                     [(ct.kind, " ".join(ct.heads), "yes" if ct.verified else "no", ct.reason) for ct in view.controls])
    rounds = table(("round", "items read", "new items", "from", "alpha spent"),
                   [(i + 1, r.n, r.new if r.new is not None else "—", r.source or "—", fmt(r.alpha, 4))
                    for i, r in enumerate(view.rounds)])
    reasons = "".join(f"<li>{escape(r)}</li>" for r in view.reasons)
    return section("certificate", "3. Certificate", head, intervals_svg(intervals(view), eps, tau),
                   "<h3>Each head removed</h3>", removals, ko, "<h3>Negative controls</h3>", controls,
                   "<h3>Rounds</h3>", rounds, f"<ul>{reasons}</ul>" if reasons else "")


def curves_section(curves: Optional[Curves], note: str = "") -> str:
    if curves is None:
        return section("curves", "4. Faithfulness curve", f"<p>{escape(note or 'not computed')}</p>")
    parts = [f"<p>f(k) = (S(C_k) − S(∅)) / (S(M) − S(∅)) for the top k heads of each ranking, on the first "
             f"{curves.n_items} test items. CPR: area under f (higher is better); CMD: area between f and 1 "
             "(lower is better).</p>"]
    for m, cs in curves.curves.items():
        if cs:
            parts.append(f"<h3>{escape(m)}</h3>" + line_chart_svg(
                [(f"{c.label} (CPR {c.cpr:.3f}, CMD {c.cmd:.3f})", [k / c.n_heads for k in c.ks], list(c.faithfulness))
                 for c in cs], "fraction of heads kept", "faithfulness f", hlines=[(1.0, "full model")]))
    rows = [(c.label, m, fmt(c.cpr), fmt(c.cmd)) for m, cs in curves.curves.items() for c in cs]
    parts.append(table(("ranking", "metric", "CPR", "CMD"), rows))
    parts += [f"<p class='note'>{escape(s)}</p>" for s in curves.skipped]
    return section("curves", "4. Faithfulness curve", *parts)


def _head_rows(grid: Grid, heads: Sequence[str]) -> list[tuple]:
    by_name = {c.name: c for c in grid.cells}
    ranks: dict[str, dict[str, int]] = {}
    for key in SCORE_NAMES:
        order = sorted((c for c in grid.cells if dict(c.scores).get(key) is not None),
                       key=lambda c: -dict(c.scores)[key])
        ranks[key] = {c.name: i + 1 for i, c in enumerate(order)}
    rows = []
    for h in heads:
        s = dict(by_name[h].scores)
        rows.append((h, fmt(by_name[h].gate), *(Markup(f'{fmt(s.get(k))} <span class="rank">#{ranks[k][h]}</span>')
                                               if s.get(k) is not None else "—" for k in SCORE_NAMES)))
    return rows


def heads_section(grid: Grid, heads: Sequence[str], probe: Optional[HeadProbe], note: str = "") -> str:
    if probe is None:
        return section("heads", "5. What each circuit head does", f"<p>{escape(note or 'not computed')}</p>")
    intro = (f"<p>Scores from the full model's attention (no ablation), with each head's rank among all "
             f"{len(grid.cells)} heads. Previous-token, duplicate-token, induction: on repeated random tokens. "
             f"Attention to answer: from the read position to the answer's earlier occurrence; direct effect: "
             f"the head's direct path to the good-minus-bad logit at the read position (first {probe.n_items} "
             "test items).</p>")
    tbl = table(("head", "gate", *SCORE_NAMES.values()), _head_rows(grid, heads))
    data = [{"tokens": list(e.tokens), "query": e.query, "answer": e.answer,
             "heads": {h: [list(r) for r in p] for h, p in e.patterns}} for e in probe.examples]
    blob = json.dumps(data).replace("</", "<\\/")  # a token "</script>" must not end the block
    view = ('<div id="attn"><label>head <select id="attn-head"></select></label> '
            '<span class="note">Tokens shaded by the attention the selected head pays them from the query token '
            '(outlined; the position the model reads). Hover a token to make it the query.</span>'
            '<div id="attn-examples"></div></div>'
            f'<script type="application/json" id="attn-data">{blob}</script>')
    return section("heads", "5. What each circuit head does", intro, tbl, "<h3>Attention patterns</h3>",
                   view if probe.examples and heads else "<p>(no circuit heads to show)</p>")


def trace_section(trace: Trace) -> str:
    parts = []
    if trace.set_sizes:
        parts.append("<h3>Size of each scored set</h3>" + line_chart_svg(
            [("scored set", list(range(1, len(trace.set_sizes) + 1)), list(trace.set_sizes))],
            "evaluation", "|C|", points=True))
    sized = [(i + 1, s.size) for i, s in enumerate(trace.steps) if s.size is not None]
    if sized:
        parts.append("<h3>|C| after each decision</h3>" + line_chart_svg(
            [("circuit", [a for a, _ in sized], [b for _, b in sized])], "decision", "|C|", step=True))
    if trace.cost:
        parts.append("<h3>Example forwards by phase</h3>" + bars_svg(list(trace.cost)))
    if trace.by_event:
        parts.append("<h3>Search forwards by decision kind</h3>" + bars_svg(list(trace.by_event)))
    return section("trace", "6. Search trace", *(parts or ["<p>No search state in this folder.</p>"]))


def render(title: str, summary: Summary, grid: Grid, cert: Optional[CertView], curves: Optional[Curves],
           probe: Optional[HeadProbe], trace: Trace, notes: dict[str, str]) -> str:
    """The whole page; ``notes[section]`` explains a section left out (no model, no test split, ...)."""
    body = [summary_section(summary), grid_section(grid), certificate_section(cert),
            curves_section(curves, notes.get("curves", "")),
            heads_section(grid, summary.heads, probe, notes.get("heads", "")), trace_section(trace)]
    return page(title, "\n".join(body))
