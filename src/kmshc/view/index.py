"""Pages for folders of runs: the ``kmshc redundancy`` chain and the ``kmshc compare`` index.

Both read the folder's own JSON (``redundancy.json``, ``compare.json``) into dataclasses, write a
report for every run folder it names (``write_run``), and link them by relative path so that the
folder can be moved or copied as a whole.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from kmshc.view.assets import page
from kmshc.view.gather import read_json
from kmshc.view.page import Markup, section, table
from kmshc.view.svg import fmt, line_chart_svg


@dataclass(frozen=True)
class Link:
    """One circuit of a folder: ``label``, what it is, and its run folder (``None``: not found)."""

    label: str
    task: str
    method: str
    size: int
    verified: Optional[bool]
    heads: tuple[str, ...]
    run_dir: Optional[Path]


@dataclass(frozen=True)
class KnockPoint:
    """One point of the knock-out curve: ``M`` without the first ``k`` circuits."""

    k: int
    label: str
    recovery: Optional[float]
    lower: Optional[float]
    upper: Optional[float]
    verdict: Optional[str]


def _run_dir(folder: Path, path: Any) -> Optional[Path]:
    """The folder of a recorded circuit path (relative to ``folder`` or to the working directory)."""
    if not isinstance(path, str):
        return None
    for p in (Path(path), folder / path, folder / Path(path).parent.name / Path(path).name):
        if p.is_file():
            return p.parent
    return None


def chain(folder: Path, d: dict) -> tuple[list[Link], list[KnockPoint]]:
    """The circuits and the knock-out curve of a ``redundancy.json`` dict."""
    links = [Link(str(c.get("name", f"C{i + 1}")), "", "redundancy", int(c.get("size", len(c.get("heads", [])))),
                  c.get("verified"), tuple(c.get("heads", [])), _run_dir(folder, c.get("path")))
             for i, c in enumerate(d.get("circuits", []))]
    knocks = []
    for k, p in enumerate(((d.get("analysis") or {}).get("knockouts")) or []):
        e = p.get("estimate") or {}
        knocks.append(KnockPoint(k, str(p.get("label", "")), e.get("recovery"), e.get("lower"), e.get("upper"),
                                 p.get("verdict")))
    return links, knocks


def compare_links(folder: Path, d: dict) -> list[Link]:
    """The circuits of a ``compare.json`` dict."""
    return [Link(str(c.get("label")), str(c.get("task", "")), str(c.get("method", "")), int(c.get("size", 0)),
                 c.get("verified"), tuple(c.get("heads", [])), _run_dir(folder, c.get("path")))
            for c in d.get("circuits", [])]


def _link_rows(folder: Path, links: Sequence[Link], write_run: Callable[[Path], Path]) -> list[tuple]:
    """Table rows with a link to each run's report, written once per run folder."""
    written: dict[Path, Path] = {}
    rows = []
    for ln in links:
        if ln.run_dir is not None and ln.run_dir not in written:
            written[ln.run_dir] = write_run(ln.run_dir)
        target = written.get(ln.run_dir) if ln.run_dir is not None else None
        href = Markup(f'<a href="{escape(Path(os.path.relpath(target, folder)).as_posix())}">report</a>') \
            if target else "(run folder not found)"
        verified = "—" if ln.verified is None else ("yes" if ln.verified else "no")
        rows.append((ln.label, ln.task, ln.method, ln.size, verified, " ".join(ln.heads), href))
    return rows


HEADER = ("circuit", "task", "method", "|C|", "verified", "heads", "report")


def compare_index(folder: Path, write_run: Callable[[Path], Path]) -> str:
    """The index page of a ``kmshc compare`` output folder."""
    links = compare_links(folder, read_json(folder / "compare.json"))
    body = section("index", f"{len(links)} circuits", table(HEADER, _link_rows(folder, links, write_run)))
    return page(f"kmshc compare: {folder.name}", body, nav=False)


def redundancy_page(folder: Path, write_run: Callable[[Path], Path]) -> str:
    """The chain of disjoint circuits, its knock-out curve, and a link to each circuit's report."""
    d = read_json(folder / "redundancy.json")
    links, knocks = chain(folder, d)
    a = d.get("analysis") or {}
    parts = [f"<p>Stopped: {escape(str(d.get('stop', '')))}: {escape(str(d.get('why', '')))}</p>",
             table(HEADER, _link_rows(folder, links, write_run))]
    if knocks:
        eps, tau = a.get("epsilon"), a.get("tau")
        refs = [(eps - tau, "ε − τ")] if isinstance(eps, (int, float)) and isinstance(tau, (int, float)) else []
        parts += ["<h3>Knock-out curve</h3>", line_chart_svg(
            [("recovery of M without C1 … Ck", [p.k for p in knocks], [p.recovery for p in knocks])],
            "circuits knocked out (k)", "recovery", hlines=refs),
            table(("k", "set", "recovery", "lower", "upper", "verdict"),
                  [(p.k, p.label, fmt(p.recovery), fmt(p.lower), fmt(p.upper), p.verdict or "—") for p in knocks])]
    return page(f"kmshc redundancy: {folder.name}", section("chain", "Chain of circuits", *parts), nav=False)
