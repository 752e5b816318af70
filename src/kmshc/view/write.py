"""``kmshc report RUN_DIR`` and :func:`report`: gather a run folder, render it, write ``report.html``.

A run folder gets the six sections of :mod:`kmshc.view.page`. A ``kmshc redundancy`` folder
(``redundancy.json``) gets its chain and knock-out curve, and a ``kmshc compare`` folder
(``compare.json``) an index; both link a report written for each run they name
(:mod:`kmshc.view.index`). The model is loaded once per experiment for sections 4 and 5
(``model=False`` leaves them out, for a report in a second without the model).
"""
from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from kmshc.types import KmshcError, atomic_write_text

REPORT = "report.html"


@dataclass(frozen=True)
class Options:
    """``curve_items``: test items the curves are scored on; ``probe_items``: test items for the
    answer attention and direct effects (the first 3 also show their patterns)."""

    model: bool = True
    curve_items: int = 16
    probe_items: int = 12


def report(run_dir: str | os.PathLike, *, model: bool = True, curve_items: int = 16, probe_items: int = 12,
           wandb: bool = False) -> Path:
    """Write ``run_dir/report.html`` (see the module doc) and return its path.

    ``wandb``: also log it to W&B as an HTML artifact (offline unless ``WANDB_MODE`` says otherwise).
    """
    from kmshc.view.index import compare_index, redundancy_page
    run_dir = Path(run_dir)
    if curve_items < 1 or probe_items < 1:
        raise KmshcError(f"curve_items and probe_items must be positive, got {curve_items} and {probe_items}")
    opts, cache = Options(model, curve_items, probe_items), {}
    if (run_dir / "redundancy.json").is_file():
        html = redundancy_page(run_dir, lambda d: run_report(d, opts, cache))
    elif (run_dir / "compare.json").is_file():
        html = compare_index(run_dir, lambda d: run_report(d, opts, cache))
    else:
        return _finish(run_report(run_dir, opts, cache), wandb)
    path = run_dir / REPORT
    atomic_write_text(path, html)
    return _finish(path, wandb)


def _finish(path: Path, wandb: bool) -> Path:
    if wandb:
        log_to_wandb(path)
    return path


def _model_sections(files, shape, opts: Options, cache: dict[str, Any]):
    """``(shape, curves, probe, notes)``: sections 4 and 5, or a note saying why each is left out."""
    from kmshc.view.faith import experiment_of, score_curves
    from kmshc.view.probe import probe_heads
    notes: dict[str, str] = {}
    exp = experiment_of(files) if opts.model else None
    if exp is None:
        why = "left out (--no_model)" if not opts.model else "left out: the circuit file records no experiment"
        return shape, None, None, {"curves": why, "heads": why}
    exp = cache.setdefault(json.dumps(exp.to_dict(), sort_keys=True), exp)  # one model load per experiment
    shape = shape or exp.shape
    curves = probe = None
    try:
        curves = score_curves(exp, files, shape, opts.curve_items)
    except KmshcError as e:  # e.g. no gap on these items: the rest of the page still stands
        notes["curves"] = f"left out: {e}"
    model, tok = exp.loaded
    probe = probe_heads(model, tok, exp.splits["test"], files.circuit.heads, n_items=opts.probe_items)
    return shape, curves, probe, notes


def run_report(run_dir: Path, opts: Options, cache: Optional[dict[str, Any]] = None) -> Path:
    """Gather and render one run folder into ``run_dir/report.html``; returns the path."""
    from kmshc.view.gather import (RANKING_METHODS, certificate_view, grid_shape, head_field, head_grid, read_run,
                                   summarise)
    from kmshc.view.page import render
    from kmshc.view.trace import search_trace
    files = read_run(run_dir)
    c = files.circuit
    cert = certificate_view(c.certificate, where=f"{files.circuit_path}: certificate") if c.certificate else None
    shape, curves, probe, notes = _model_sections(files, grid_shape(files), opts, {} if cache is None else cache)
    if shape is None:
        raise KmshcError(f"{run_dir}: no gates.json records the model's layers x heads; "
                         "run the report with the model (without --no_model)")
    ranking = (files.gates or {}).get("method") in RANKING_METHODS
    grid = head_grid(shape, c.heads, gates=None if ranking else head_field(files.gates, "gate"),
                     attribution=head_field(files.gates, "log_alpha") if ranking else None,
                     scores=probe.scores if probe else None)
    title = f"kmshc report: {c.task} on {c.model} ({files.run_dir.name})"
    html = render(title, summarise(files, cert), grid, cert, curves, probe,
                  search_trace(files.state, c, files.gates), notes)
    path = files.run_dir / REPORT
    atomic_write_text(path, html)
    return path


def log_to_wandb(path: Path) -> None:
    """Log ``path`` as a W&B artifact of type ``report`` and as an HTML panel, offline by default."""
    import wandb
    run = wandb.init(project=os.environ.get("WANDB_PROJECT", "kmshc"), dir=str(path.parent), job_type="report",
                     name=f"report-{path.parent.name}", mode=os.environ.get("WANDB_MODE", "offline"))
    try:
        art = wandb.Artifact(f"report-{path.parent.name}", type="report")
        art.add_file(str(path), name=REPORT)
        run.log_artifact(art)
        run.log({"report": wandb.Html(path.read_text(encoding="utf-8"), inject=False)})
        run.summary.update(certificate_summary(path.parent))
    finally:
        run.finish()


def certificate_summary(folder: Path) -> dict[str, Any]:
    """The verdict of the folder's circuit, for a W&B run's summary (empty when it has none)."""
    for name in ("circuit_searched.json", "circuit_verified.json"):
        if (folder / name).is_file():
            c = json.loads((folder / name).read_text(encoding="utf-8"))
            cert = c.get("certificate") or {}
            verdict = cert.get("verdict", "verified" if cert.get("verified") else "undecided") if cert else None
            return {"verdict": verdict, "verified": cert.get("verified"), "test_items": cert.get("n"),
                    "heads": " ".join(c.get("heads", []))}
    return {}


def _report(args: argparse.Namespace) -> None:
    path = report(args.run_dir, model=not args.no_model, curve_items=args.curve_items,
                  probe_items=args.probe_items, wandb=args.wandb)
    print(path)


def add_report_parser(sub) -> None:
    s = sub.add_parser("report", help="write RUN_DIR/report.html: one self-contained page that shows a circuit",
                       description="Write RUN_DIR/report.html (opens offline): summary, head grid, certificate, "
                                   "faithfulness curves, what each circuit head does, search trace. A kmshc "
                                   "compare or redundancy folder gets an index that links each run's report.")
    s.add_argument("run_dir", metavar="RUN_DIR", help="a run folder (train, search, rank), or a compare or "
                                                       "redundancy output folder")
    s.add_argument("--no_model", action="store_true", help="leave out the sections that need the model (4, 5)")
    s.add_argument("--curve_items", type=int, default=16, help="test items the faithfulness curves are scored on")
    s.add_argument("--probe_items", type=int, default=12, help="test items for attention to the answer and "
                                                               "direct effects (the first 3 show patterns)")
    s.add_argument("--wandb", action="store_true", help="also log the page to W&B as an HTML artifact (offline "
                                                        "unless WANDB_MODE says otherwise)")
    s.set_defaults(func=_report)
