"""What a run folder holds, as typed data for the report: pure functions, no model, no HTML.

A run folder (``train.py``, ``kmshc search``, ``kmshc rank``) holds a circuit file
(``circuit_searched.json``, else ``circuit_verified.json``, else ``circuit_learned.json``), and
maybe ``gates.json`` (learned gates or a ranking) and ``search_state.json`` (the search's decisions
and every scored set). Certificates written before the ``verdict`` and ``rounds`` fields existed
are read with a fallback: ``verdict`` from ``verified``, one round of ``n`` items.
"""
from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from kmshc.search.certificate import Certificate, Estimate
from kmshc.search.gates_file import load_gates
from kmshc.search.rundir import STATE
from kmshc.search.state import read_state
from kmshc.types import Circuit, KmshcError, read_circuit

CIRCUIT_FILES = ("circuit_searched.json", "circuit_verified.json", "circuit_learned.json")
RANKING_METHODS = ("attribution", "integrated_gradients")  # gates.json whose log_alpha is a score


@dataclass(frozen=True)
class RunFiles:
    """The parsed files of one run folder; ``gates``/``state``: ``None`` where the file is absent."""

    run_dir: Path
    circuit_path: Path
    circuit: Circuit
    gates: Optional[dict]
    state: Optional[dict]


def read_json(path: Path) -> dict:
    """A JSON object from ``path``; anything else is a :class:`KmshcError` naming the file."""
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise KmshcError(f"{path}: cannot read it as JSON ({e})") from None
    if not isinstance(d, dict):
        raise KmshcError(f"{path}: expected a JSON object, got {type(d).__name__}")
    return d


def read_run(run_dir: str | Path) -> RunFiles:
    """Parse ``run_dir``; a missing folder or circuit file is a :class:`KmshcError` naming the path."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise KmshcError(f"{run_dir}: not a run folder (no such directory)")
    found = [run_dir / f for f in CIRCUIT_FILES if (run_dir / f).is_file()]
    if not found:
        raise KmshcError(f"{run_dir}: no circuit file ({', '.join(CIRCUIT_FILES)}); run train.py, "
                         "`kmshc search` or `kmshc rank` into this folder first")
    gates = load_gates(run_dir)
    return RunFiles(run_dir, found[0], read_circuit(found[0]), gates[0] if gates else None,
                    read_state(run_dir / STATE) if (run_dir / STATE).is_file() else None)


def head_field(gates: Optional[Mapping[str, Any]], field: str) -> Optional[dict[str, float]]:
    """``{head: gates["heads"][head][field]}`` or ``None`` (no gates.json, or no such field)."""
    heads = (gates or {}).get("heads")
    if not isinstance(heads, dict):
        return None
    try:
        return {h: float(v[field]) for h, v in heads.items()}
    except (KeyError, TypeError, ValueError):
        return None


# ------------------------------------------------------------------ summary
@dataclass(frozen=True)
class Summary:
    """Section 1: what was run and what came out; ``commands``: the shell lines that rerun it."""

    model: str
    task: str
    ablation: str
    scorer: str
    metric: str
    epsilon: float
    tau: Optional[float]
    method: str
    heads: tuple[str, ...]
    n_heads_total: int
    evaluations: int
    example_forwards: Optional[float]
    verdict: str
    reason: str
    commands: tuple[str, ...]


def _flags(prefix: str, d: Mapping[str, Any], skip: Sequence[str] = ()) -> list[str]:
    """``--prefix.key value`` for every set scalar or list of ``d`` (nested dicts recurse)."""
    out: list[str] = []
    for k, v in d.items():
        if k in skip or v is None or v == []:
            continue
        if isinstance(v, dict):
            out += _flags(f"{prefix}{k}.", v)
        else:
            out += [f"--{prefix}{k}", json.dumps(v) if isinstance(v, (list, bool)) else str(v)]
    return out


def reproduce(files: RunFiles) -> tuple[str, ...]:
    """The commands that rerun this folder: the training run (its own config.yaml), then the search
    with every recorded field, so a changed default does not change the rerun."""
    c, cmds = files.circuit, []
    if (files.run_dir / "config.yaml").is_file() and c.extra.get("method") != "cold":
        cmds.append(f"kmshc train fit --config {shlex.quote(str(files.run_dir / 'config.yaml'))}")
    search = c.config.get("search") if isinstance(c.config, dict) else None
    if isinstance(search, dict):
        flags = _flags("", search, skip=("name", "runs_dir", "out", "experiment", "resume", "overwrite"))
        flags += _flags("experiment.", c.config.get("experiment") or {}, skip=("device", "device_map"))
        cmds.append(" ".join(["kmshc search", *map(shlex.quote, flags),
                              "--out", shlex.quote(str(files.run_dir)), "--overwrite", "true"]))
    return tuple(cmds)


def summarise(files: RunFiles, cert: Optional["CertView"]) -> Summary:
    """Section 1 from the circuit file and its certificate (``None``: a learned circuit)."""
    c = files.circuit
    search = c.config.get("search", {}) if isinstance(c.config, dict) else {}
    metric = cert.metric if cert else str(search.get("metric", "accuracy"))
    tau = cert.tau if cert else None
    verdict = cert.verdict if cert else "not certified"
    reason = cert.reason if cert else "a learned circuit has no certificate: certify it with `kmshc verify CIRCUIT`"
    return Summary(c.model, c.task, c.ablation, c.scorer, metric, float(c.epsilon), tau,
                   str(c.extra.get("method", files.circuit_path.stem.removeprefix("circuit_"))), tuple(c.heads),
                   c.n_heads_total, c.evaluations, c.example_forwards, verdict, reason, reproduce(files))


# ------------------------------------------------------------------ certificate
@dataclass(frozen=True)
class Round:
    """One look of a sequential certificate: ``n`` items read so far, ``new`` of them drawn for this
    look from ``source``, the error ``alpha`` spent."""

    n: int
    alpha: Optional[float]
    new: Optional[int] = None
    source: str = ""


@dataclass(frozen=True)
class CertView:
    """Section 3: the certificate with ``verdict``, its one-sentence ``reason`` and ``rounds``."""

    cert: Certificate
    verdict: str
    reason: str
    rounds: tuple[Round, ...]

    def __getattr__(self, name: str) -> Any:  # the certificate's own fields (n, epsilon, tau, ...)
        if name == "cert":
            raise AttributeError(name)
        return getattr(self.cert, name)


def certificate_view(raw: Mapping[str, Any], where: str = "certificate") -> CertView:
    """Parse a certificate dict; older files get ``verdict`` from ``verified`` and one round of ``n``."""
    cert = Certificate.from_dict(dict(raw), where=where)
    verdict = raw.get("verdict") if isinstance(raw.get("verdict"), str) else (
        "verified" if cert.verified else "undecided")
    reason = "every check passes" if cert.verified else (cert.reasons[0] if cert.reasons else verdict)
    rounds = raw.get("rounds")
    if isinstance(rounds, list) and rounds and all(isinstance(r, dict) and "n" in r for r in rounds):
        parsed = tuple(Round(int(r["n"]), None if r.get("alpha") is None else float(r["alpha"]),
                             r.get("new"), str(r.get("source", ""))) for r in rounds)
    else:
        parsed = (Round(cert.n, 1 - cert.confidence, cert.n, cert.split),)
    return CertView(cert, verdict, reason, parsed)


@dataclass(frozen=True)
class Interval:
    """One row of the interval picture: a recovery with its one-sided bounds (``None``: unbounded)."""

    label: str
    recovery: Optional[float]
    lower: Optional[float]
    upper: Optional[float]
    kind: str  # circuit, removal, knockout


def intervals(view: CertView) -> list[Interval]:
    """``C``, then ``C \\ {h}`` per head, then ``M \\ C``: rows for the picture against ε ± τ."""
    def row(label: str, e: Estimate, kind: str) -> Interval:
        return Interval(label, e.recovery, e.lower, e.upper, kind)
    rows = [row("C", view.circuit, "circuit")]
    rows += [row(f"C \\ {r.head}", r.estimate, f"removal {r.cls}") for r in view.removals]
    if view.knockout:
        rows.append(row("M \\ C", view.knockout.estimate, f"knockout {view.knockout.verdict}"))
    return rows


# ------------------------------------------------------------------ head grid
@dataclass(frozen=True)
class HeadCell:
    """One head of the grid: learned ``gate``, ``in_circuit``, ``attribution`` and per-head ``scores``."""

    name: str
    layer: int
    head: int
    gate: Optional[float]
    in_circuit: bool
    attribution: Optional[float]
    scores: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class Grid:
    """Section 2: ``n_layers × n_heads`` cells, row-major (layer, then head)."""

    n_layers: int
    n_heads: int
    cells: tuple[HeadCell, ...]


def head_grid(shape: tuple[int, int], circuit: Sequence[str], gates: Optional[Mapping[str, float]] = None,
              attribution: Optional[Mapping[str, float]] = None,
              scores: Optional[Mapping[str, Sequence[Sequence[float]]]] = None) -> Grid:
    """One cell per head of ``shape`` ``(L, H)``; ``scores``: named ``[L, H]`` tables shown on hover."""
    n_layers, n_heads = shape
    members, cells = set(circuit), []
    for layer in range(n_layers):
        for head in range(n_heads):
            name = f"L{layer}H{head}"
            per = tuple((k, float(v[layer][head])) for k, v in (scores or {}).items() if v is not None)
            cells.append(HeadCell(name, layer, head, (gates or {}).get(name), name in members,
                                  (attribution or {}).get(name), per))
    unknown = members - {c.name for c in cells}
    if unknown:
        raise KmshcError(f"circuit heads {sorted(unknown)} lie outside the model's {n_layers} x {n_heads} heads")
    return Grid(n_layers, n_heads, tuple(cells))


def grid_shape(files: RunFiles) -> Optional[tuple[int, int]]:
    """``(L, H)`` as gates.json records it, or ``None`` (then the model tells)."""
    g = files.gates or {}
    if isinstance(g.get("n_layers"), int) and isinstance(g.get("n_heads"), int):
        return g["n_layers"], g["n_heads"]
    return None
