"""Inline SVG charts for the report: the head grid, intervals, line charts and bars.

Hand-written so that the page needs no script library: hovering any mark shows its numbers
through SVG ``<title>`` (the browser's own tooltip), which works offline and cannot fail to load.
Every function returns one ``<svg>`` string; inputs are the dataclasses of :mod:`kmshc.view.gather`.
"""
from __future__ import annotations

import math
from html import escape
from typing import Optional, Sequence

from kmshc.view.gather import Grid, Interval

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf")


def fmt(v: Optional[float], digits: int = 3) -> str:
    """A number for people: ``—`` for missing, fixed digits otherwise."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def blue(x: Optional[float]) -> str:
    """Fill for a gate in [0, 1]: white to dark blue; grey where there is no gate."""
    if x is None:
        return "#e0e0e0"
    t = min(max(float(x), 0.0), 1.0)
    r, g, b = (int(round(a + (z - a) * t)) for a, z in ((247, 8), (251, 48), (255, 107)))
    return f"#{r:02x}{g:02x}{b:02x}"


def head_grid_svg(grid: Grid, cell: int = 22) -> str:
    """``L`` rows × ``H`` columns of ``<rect class="cell">``: fill = gate, thick red outline = in
    the circuit, a black dot sized by |attribution| where present; ``<title>`` = the head's numbers."""
    pad_l, pad_t = 44, 22
    w, h = pad_l + grid.n_heads * cell + 4, pad_t + grid.n_layers * cell + 4
    top = max((abs(c.attribution) for c in grid.cells if c.attribution is not None), default=0.0) or 1.0
    out = [f'<svg class="grid" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" '
           f'aria-label="head grid {grid.n_layers} x {grid.n_heads}">']
    out += [f'<text x="{pad_l + j * cell + cell / 2}" y="14" class="ax">H{j}</text>' for j in range(grid.n_heads)]
    out += [f'<text x="{pad_l - 4}" y="{pad_t + i * cell + cell * 0.7}" class="ax end">L{i}</text>'
            for i in range(grid.n_layers)]
    for c in grid.cells:
        x, y = pad_l + c.head * cell, pad_t + c.layer * cell
        tip = [f"{c.name}{' (in the circuit)' if c.in_circuit else ''}", f"gate {fmt(c.gate)}"]
        tip += [f"attribution {fmt(c.attribution, 4)}"] if c.attribution is not None else []
        tip += [f"{k.replace('_', ' ')} {fmt(v)}" for k, v in c.scores]
        stroke = 'stroke="#d62728" stroke-width="3"' if c.in_circuit else 'stroke="#bbb" stroke-width="0.5"'
        out.append(f'<g><rect class="cell{" member" if c.in_circuit else ""}" data-head="{c.name}" x="{x + 1.5}" '
                   f'y="{y + 1.5}" width="{cell - 3}" height="{cell - 3}" fill="{blue(c.gate)}" {stroke}>'
                   f'<title>{escape(chr(10).join(tip))}</title></rect>')
        if c.attribution is not None:
            r = 1 + (cell / 2 - 4) * abs(c.attribution) / top
            out.append(f'<circle cx="{x + cell / 2}" cy="{y + cell / 2}" r="{r:.1f}" fill="#000" opacity="0.55" '
                       f'pointer-events="none"/>')
        out.append("</g>")
    return "\n".join(out + ["</svg>"])


class Axes:
    """A linear map from data to pixels on a ``width × height`` chart with margins for labels."""

    def __init__(self, xs: Sequence[float], ys: Sequence[float], width: int = 560, height: int = 300) -> None:
        self.w, self.h, self.l, self.r, self.t, self.b = width, height, 56, 12, 12, 40
        self.x0, self.x1 = _span(xs)
        self.y0, self.y1 = _span(ys)

    def x(self, v: float) -> float:
        return self.l + (v - self.x0) / (self.x1 - self.x0) * (self.w - self.l - self.r)

    def y(self, v: float) -> float:
        return self.h - self.b - (v - self.y0) / (self.y1 - self.y0) * (self.h - self.t - self.b)

    def frame(self, xlabel: str, ylabel: str) -> list[str]:
        """Axes lines, five ticks per axis and the two labels."""
        out = [f'<line x1="{self.l}" y1="{self.h - self.b}" x2="{self.w - self.r}" y2="{self.h - self.b}" class="axis"/>',
               f'<line x1="{self.l}" y1="{self.t}" x2="{self.l}" y2="{self.h - self.b}" class="axis"/>']
        for i in range(5):
            vx, vy = self.x0 + (self.x1 - self.x0) * i / 4, self.y0 + (self.y1 - self.y0) * i / 4
            out.append(f'<text x="{self.x(vx):.1f}" y="{self.h - self.b + 14}" class="ax">{_tick(vx)}</text>')
            out.append(f'<text x="{self.l - 4}" y="{self.y(vy) + 4:.1f}" class="ax end">{_tick(vy)}</text>')
        out.append(f'<text x="{(self.l + self.w) / 2}" y="{self.h - 6}" class="ax">{escape(xlabel)}</text>')
        out.append(f'<text x="12" y="{(self.t + self.h - self.b) / 2}" class="ax" '
                   f'transform="rotate(-90 12 {(self.t + self.h - self.b) / 2})">{escape(ylabel)}</text>')
        return out


def _span(vs: Sequence[float]) -> tuple[float, float]:
    vs = [v for v in vs if v is not None and math.isfinite(v)] or [0.0, 1.0]
    lo, hi = min(vs), max(vs)
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    pad = (hi - lo) * 0.05
    return lo - pad, hi + pad


def _tick(v: float) -> str:
    return f"{v:.0f}" if abs(v) >= 100 else f"{v:.2g}" if abs(v) >= 1 else f"{v:.2f}"


def hline(ax: Axes, y: float, label: str, css: str = "ref") -> str:
    return (f'<line x1="{ax.l}" x2="{ax.w - ax.r}" y1="{ax.y(y):.1f}" y2="{ax.y(y):.1f}" class="{css}"/>'
            f'<text x="{ax.w - ax.r - 2}" y="{ax.y(y) - 3:.1f}" class="ax end">{escape(label)}</text>')


def line_chart_svg(series: Sequence[tuple[str, Sequence[float], Sequence[float]]], xlabel: str, ylabel: str,
                   hlines: Sequence[tuple[float, str]] = (), points: bool = False, step: bool = False) -> str:
    """One polyline (or dots, ``points``; a staircase, ``step``) per ``(label, xs, ys)``, with a legend."""
    xs = [x for _, a, _ in series for x in a]
    ys = [y for _, _, b in series for y in b if y is not None] + [y for y, _ in hlines]
    ax = Axes(xs, ys)
    out = [f'<svg class="chart" width="{ax.w}" height="{ax.h + 18 * len(series)}" role="img">'] + ax.frame(xlabel, ylabel)
    out += [hline(ax, y, label) for y, label in hlines]
    for i, (label, a, b) in enumerate(series):
        col, pts = PALETTE[i % len(PALETTE)], [(x, y) for x, y in zip(a, b) if y is not None]
        if step:
            pts = [p for k, q in enumerate(pts) for p in ([(q[0], pts[k - 1][1])] if k else []) + [q]]
        if points:
            out += [f'<circle cx="{ax.x(x):.1f}" cy="{ax.y(y):.1f}" r="2.5" fill="{col}"><title>{escape(label)}: '
                    f'{_tick(x)}, {_tick(y)}</title></circle>' for x, y in pts]
        else:
            d = " ".join(f"{ax.x(x):.1f},{ax.y(y):.1f}" for x, y in pts)
            out.append(f'<polyline points="{d}" fill="none" stroke="{col}" stroke-width="2"/>')
            out += [f'<circle cx="{ax.x(x):.1f}" cy="{ax.y(y):.1f}" r="3" fill="{col}"><title>{escape(label)}: '
                    f'{_tick(x)}, {fmt(y)}</title></circle>' for x, y in pts] if not step else []
        out.append(f'<rect x="{ax.l}" y="{ax.h + 18 * i + 2}" width="12" height="10" fill="{col}"/>'
                   f'<text x="{ax.l + 16}" y="{ax.h + 18 * i + 11}" class="ax start">{escape(label)}</text>')
    return "\n".join(out + ["</svg>"])


def intervals_svg(rows: Sequence[Interval], epsilon: float, tau: float) -> str:
    """One row per interval: the recovery as a dot, its bounds as a bar (an open side runs to the
    chart's edge), with vertical lines at ε − τ and ε + τ."""
    vals = [v for r in rows for v in (r.recovery, r.lower, r.upper) if v is not None] + [epsilon - tau, epsilon + tau]
    lo, hi = min(vals + [0.0]), max(vals + [1.0])
    w, row, left = 560, 22, 120
    h = 30 + row * len(rows)
    x = lambda v: left + (v - lo) / ((hi - lo) or 1) * (w - left - 16)  # noqa: E731
    out = [f'<svg class="chart intervals" width="{w}" height="{h}" role="img">']
    for v, label, side in ((epsilon - tau, "ε − τ", "end"), (epsilon + tau, "ε + τ", "start")):
        # the two labels sit on either side of their lines, so a small τ does not overlap them
        out.append(f'<line x1="{x(v):.1f}" x2="{x(v):.1f}" y1="14" y2="{h - 4}" class="ref"/>'
                   f'<text x="{x(v) + (-3 if side == "end" else 3):.1f}" y="11" class="ax {side}">{label} = {v:.3g}</text>')
    for i, r in enumerate(rows):
        y, col = 26 + row * i, "#d62728" if r.kind.startswith("knockout") else "#1f77b4"
        a, b = x(r.lower if r.lower is not None else lo), x(r.upper if r.upper is not None else hi)
        tip = escape(f"{r.label}: recovery {fmt(r.recovery)} [{fmt(r.lower)}, {fmt(r.upper)}] ({r.kind})")
        out.append(f'<text x="{left - 6}" y="{y + 4}" class="ax end">{escape(r.label)}</text>')
        out.append(f'<g class="interval"><title>{tip}</title><line x1="{a:.1f}" x2="{b:.1f}" y1="{y}" y2="{y}" '
                   f'stroke="{col}" stroke-width="4" opacity="0.45"/>'
                   + (f'<circle cx="{x(r.recovery):.1f}" cy="{y}" r="4" fill="{col}"/>' if r.recovery is not None else "")
                   + "</g>")
    return "\n".join(out + ["</svg>"])


def bars_svg(items: Sequence[tuple[str, float]], unit: str = "") -> str:
    """Horizontal bars, one per ``(label, value)``, the value written at the bar's end."""
    w, row, left = 560, 20, 190
    top = max((v for _, v in items), default=0.0) or 1.0
    out = [f'<svg class="chart bars" width="{w}" height="{row * len(items) + 6}" role="img">']
    for i, (label, v) in enumerate(items):
        bw = (w - left - 90) * v / top
        out.append(f'<text x="{left - 6}" y="{row * i + 15}" class="ax end">{escape(label)}</text>'
                   f'<rect x="{left}" y="{row * i + 4}" width="{bw:.1f}" height="{row - 6}" fill="#1f77b4"/>'
                   f'<text x="{left + bw + 4:.1f}" y="{row * i + 15}" class="ax start">{v:,.0f}{unit}</text>')
    return "\n".join(out + ["</svg>"])
