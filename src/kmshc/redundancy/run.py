"""``kmshc redundancy``: the chain of disjoint sufficient circuits of a task on a model.

``C1`` is searched as usual (cold, or warm from a train run); ``Ck`` is searched among the heads
outside ``C1 … C(k−1)``, which stay ablated, against the same ``U`` (from the true ``S(M)`` and
``S(∅)``). The chain stops when the heads left cannot reach ``U`` together, or at a budget.
Outputs under ``--out``: ``C1/``, ``C2/``, … (each a search run directory with its certified
``circuit_searched.json``), ``redundancy.json``, ``report.md``, ``knockout.png`` and ``mix.png``
(docs/redundancy.md). A rerun reuses every finished circuit and resumes an interrupted one.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Optional

from kmshc.experiment import Experiment
from kmshc.redundancy.disjoint import Analysis, Found, analyze, find_circuits
from kmshc.search.certificate import Certificate
from kmshc.search.config import SearchConfig
from kmshc.search.run import run
from kmshc.search.rundir import SEARCHED, STATE, acquire_lock, release_lock
from kmshc.search.gates_file import read_gates
from kmshc.types import Circuit, KmshcError, atomic_write_json, ensure_writable_dir, read_circuit

RESULT = "redundancy.json"


@dataclass(frozen=True)
class Redundancy:
    """The chain and its analysis; ``learned``: the heads of the train run's learned set
    (gate > ``gate_threshold``) when the chain started warm, else ``None``."""

    out: str
    circuits: list[Found]
    stop: str
    why: str
    analysis: Optional[Analysis]
    learned: Optional[list[str]] = None

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict
        learned = set(self.learned or ())
        return {"out": self.out, "stop": self.stop, "why": self.why,
                "circuits": [{"name": f"C{k + 1}", "heads": list(f.heads), "size": len(f.heads), "path": f.path,
                              "evaluations": f.evaluations,
                              "verified": f.certificate.verified if f.certificate else None,
                              "learned_overlap": len(learned & set(f.heads)) if self.learned is not None else None,
                              "certificate": f.certificate.summary() if f.certificate else None}
                             for k, f in enumerate(self.circuits)],
                "learned": self.learned, "analysis": asdict(self.analysis) if self.analysis else None}


def _found(c: Circuit, path: Path) -> Found:
    cert = Certificate.from_dict(c.certificate, where=f"{path}: certificate") if c.certificate else None
    return Found(tuple(c.heads), cert, c.evaluations, str(path), bool(c.extra.get("capped")))


def _finder(cfg: SearchConfig, out: Path, on_progress):
    """``find(found, budget)`` for :func:`find_circuits`: one search run directory per circuit."""
    def find(found: list[Found], budget: int | None) -> Found:
        d = out / f"C{len(found) + 1}"
        exclude = [f.path for f in found]
        done = d / SEARCHED
        if done.exists() and not cfg.overwrite:
            c = read_circuit(done)
            if list(c.config.get("search", {}).get("exclude", [])) == exclude and not c.extra.get("capped"):
                return _found(c, done)  # finished before: reuse it
        sub = replace(cfg, out=str(d), exclude=exclude, max_evaluations=budget, name=None,
                      resume=(d / STATE).exists() and not cfg.overwrite)
        circ, path = run(sub, on_progress)
        return _found(circ, path)
    return find


def redundancy(cfg: SearchConfig, *, out: str | Path, max_circuits: int = 5, mix_points: int = 6,
               on_progress=None) -> Redundancy:
    """Find the chain ``C1, C2, …`` (see the module docstring), analyse it on the certificate's split
    and write ``redundancy.json`` and the report. ``cfg.max_evaluations`` caps the whole chain's
    search evaluations (the certificates' evaluations are not counted)."""
    from kmshc.redundancy.report import write_report
    if cfg.mode not in ("cold", "warm"):
        raise KmshcError(f"redundancy: mode must be cold or warm, got {cfg.mode!r}")
    if cfg.exclude:
        raise KmshcError("redundancy: exclude is set by the chain itself; run without --exclude")
    if max_circuits < 1:
        raise KmshcError(f"max_circuits: expected a positive integer, got {max_circuits}")
    out = ensure_writable_dir(Path(out), "redundancy directory")
    acquire_lock(out)
    try:
        found, stop, why = find_circuits(_finder(cfg, out, on_progress), max_circuits=max_circuits,
                                         max_evaluations=cfg.max_evaluations)
        analysis = _analyze(cfg, found, mix_points) if found else None
        learned = None
        if cfg.mode == "warm":
            _, gates, _ = read_gates(Path(cfg.from_run))
            learned = sorted(h for h, g in gates.items() if g > cfg.gate_threshold)
        res = Redundancy(str(out), found, stop, why, analysis, learned)
        atomic_write_json(out / RESULT, res.to_dict())
        write_report(res, out)
        return res
    finally:
        release_lock(out)


def _analyze(cfg: SearchConfig, found: list[Found], mix_points: int) -> Analysis:
    """Score the chain on the certificate's split, with the experiment the searches used."""
    first = read_circuit(found[0].path)
    exp = Experiment.from_dict(first.config["experiment"], where=f"{found[0].path}: field 'config.experiment'")
    cert = found[0].certificate
    epsilon = cert.epsilon if cert else cfg.epsilon  # an absolute threshold, as the certificate read it
    return analyze(exp.scorer_for(cfg.verify_split).outcomes, exp.shape, found, epsilon=epsilon, metric=cfg.metric,
                   config=cfg.certificate, mix_points=mix_points, split=cfg.verify_split)
