"""Compare circuits: learned vs searched, across tasks and across seeds (pure maths + loading).

Every function below works on plain head-name sets (``frozenset[str]`` of ``L{l}H{h}``) so a
reader can recompute each number by hand. Plots live in :mod:`kmshc.compare.plots`, tables in
:mod:`kmshc.compare.tables`, the report in :mod:`kmshc.compare.report`, W&B logging in
:mod:`kmshc.compare.wandb_log` (imported only with ``--wandb``, so nothing here imports wandb).

**Head classes** (per method, e.g. learned or searched; ``f_t(h)`` is the fraction of task
``t``'s circuits that contain head ``h``, over that task's seeds/resamples):

- *strong in t*: ``f_t(h) >= strong`` (default 0.5);
- *weak in t*: ``0 < f_t(h) < strong`` (in at least one circuit, but not strong);
- *super in t*: ``f_t(h) >= super_`` (default 0.9) and ``h`` is strong in no other task.

A super head is strong, so super sets of two tasks never overlap; their overlap matrix is
diagonal by construction and the useful cross-task matrices are ``any``, ``weak``, ``strong``.
"""
from __future__ import annotations

import itertools
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from kmshc.search.gates_file import head_values
from kmshc.types import Circuit, KmshcError, parse_head, read_circuit

LEVELS = ("any", "weak", "strong", "super")


# --------------------------------------------------------------------------- set maths
def jaccard(a: Iterable[str], b: Iterable[str]) -> float:
    """``|a ∩ b| / |a ∪ b|``; two empty sets count as identical (1.0)."""
    a, b = set(a), set(b)
    union = a | b
    return len(a & b) / len(union) if union else 1.0


def precision_recall(pred: Iterable[str], ref: Iterable[str]) -> tuple[float, float]:
    """Precision ``|p ∩ r| / |p|`` and recall ``|p ∩ r| / |r|`` of ``pred`` against ``ref``.

    An empty ``pred`` has precision 1.0 (it claims nothing wrong); an empty ``ref`` recall 1.0.
    """
    p, r = set(pred), set(ref)
    inter = len(p & r)
    return (inter / len(p) if p else 1.0), (inter / len(r) if r else 1.0)


def pair_stats(a: Iterable[str], b: Iterable[str]) -> dict[str, float | int]:
    """Size, overlap, Jaccard and precision/recall of ``a`` against ``b``."""
    a, b = set(a), set(b)
    prec, rec = precision_recall(a, b)
    return {"size_a": len(a), "size_b": len(b), "intersection": len(a & b), "jaccard": jaccard(a, b),
            "precision_a_vs_b": prec, "recall_a_vs_b": rec}


def mean_pairwise_jaccard(sets: Sequence[Iterable[str]]) -> float | None:
    """Seed stability: the mean Jaccard over all unordered pairs; ``None`` with fewer than 2 sets."""
    sets = [set(s) for s in sets]
    pairs = list(itertools.combinations(sets, 2))
    return sum(jaccard(a, b) for a, b in pairs) / len(pairs) if pairs else None


def head_frequency(sets: Sequence[Iterable[str]]) -> dict[str, float]:
    """Fraction of ``sets`` containing each head that occurs at least once."""
    counts: dict[str, int] = defaultdict(int)
    for s in sets:
        for h in set(s):
            counts[h] += 1
    return {h: counts[h] / len(sets) for h in _sorted(counts)}


def classify_heads(freq: Mapping[str, Mapping[str, float]], strong: float = 0.5,
                   super_: float = 0.9) -> dict[str, dict[str, list[str]]]:
    """``{task: {level: sorted heads}}`` for the levels ``any, weak, strong, super`` (module doc).

    ``freq`` maps task -> head -> within-task frequency (from :func:`head_frequency`).
    """
    if not 0 < strong <= super_ <= 1:
        raise KmshcError(f"head classes need 0 < strong <= super <= 1, got strong={strong}, super={super_}")
    strong_sets = {t: {h for h, f in fr.items() if f >= strong} for t, fr in freq.items()}
    out = {}
    for t, fr in freq.items():
        elsewhere = set().union(*(s for u, s in strong_sets.items() if u != t))
        out[t] = {"any": _sorted(h for h, f in fr.items() if f > 0),
                  "weak": _sorted(h for h, f in fr.items() if 0 < f < strong),
                  "strong": _sorted(strong_sets[t]),
                  "super": _sorted(h for h, f in fr.items() if f >= super_ and h not in elsewhere)}
    return out


def overlap_matrix(sets: Mapping[str, Iterable[str]]) -> dict[str, Any]:
    """Jaccard and intersection counts between every two named sets (rows/cols in key order)."""
    names = list(sets)
    s = [set(sets[n]) for n in names]
    return {"labels": names,
            "jaccard": [[jaccard(a, b) for b in s] for a in s],
            "intersection": [[len(a & b) for b in s] for a in s]}


def layer_counts(heads: Iterable[str], n_layers: int) -> list[int]:
    """Number of heads per layer, ``[n_layers]``."""
    counts = [0] * n_layers
    for name in heads:
        counts[parse_head(name, n_layers).layer] += 1
    return counts


def mean_layer_distribution(sets: Sequence[Iterable[str]], n_layers: int) -> list[float]:
    """Mean number of circuit heads per layer over ``sets`` (e.g. seeds), ``[n_layers]``."""
    rows = [layer_counts(s, n_layers) for s in sets]
    return [sum(col) / len(rows) for col in zip(*rows)] if rows else [0.0] * n_layers


def depth_summary(distribution: Sequence[float]) -> dict[str, float | None]:
    """Share of heads in the first, middle and last third of layers, and the mean depth (0..1)."""
    total, n = sum(distribution), len(distribution)
    if not total:
        return {"early": None, "middle": None, "late": None, "mean_depth": None}
    thirds = [range(0, n // 3), range(n // 3, n - n // 3), range(n - n // 3, n)]
    early, middle, late = (sum(distribution[i] for i in r) / total for r in thirds)
    depth = sum(i * c for i, c in enumerate(distribution)) / total / max(1, n - 1)
    return {"early": early, "middle": middle, "late": late, "mean_depth": depth}


def _sorted(names: Iterable[str]) -> list[str]:
    return [h.name for h in sorted(parse_head(n) for n in names)]


# --------------------------------------------------------------------------- loading
@dataclass(frozen=True)
class Entry:
    """One circuit to compare: where it came from, its method and, for learned runs, the gates."""

    label: str
    path: Path
    circuit: Circuit
    method: str
    gates: Mapping[str, float] | None = None

    @property
    def heads(self) -> frozenset[str]:
        return frozenset(self.circuit.heads)

    @property
    def task(self) -> str:
        return self.circuit.task

    @property
    def seed(self) -> int:
        return self.circuit.seed

    @property
    def experiment(self) -> Mapping[str, Any] | None:
        return (self.circuit.config or {}).get("experiment")


def _method(c: Circuit, path: Path) -> str:
    m = c.extra.get("method")
    if isinstance(m, str) and m:
        return m
    stem = path.stem.removeprefix("circuit_")
    return stem if stem in ("learned", "searched") else "searched" if c.certificate else stem


def _entry(path: Path, label: str) -> Entry:
    c = read_circuit(path)
    gates = c.extra.get("gates") if isinstance(c.extra.get("gates"), dict) else None
    return Entry(label=label, path=path, circuit=c, method=_method(c, path),
                 gates={h: float(v) for h, v in gates.items()} if gates else head_values(path.parent, "gate"))


def _run_files(d: Path) -> list[Path]:
    return sorted(p for p in d.glob("circuit_*.json") if p.is_file())


def load_entries(paths: Sequence[str | Path]) -> list[Entry]:
    """Circuits from run directories, folders of run directories, or circuit JSON files.

    A run directory contributes every ``circuit_*.json`` in it (``circuit_learned.json``,
    ``circuit_searched.json``, ...); a folder without such files contributes its sub-folders' runs.
    """
    out: list[Entry] = []
    for raw in paths:
        p = Path(raw)
        if p.is_file():
            out.append(_entry(p, f"{p.parent.name}:{_method(read_circuit(p), p)}"))
        elif p.is_dir():
            runs = [p] if _run_files(p) else [d for d in sorted(p.iterdir()) if d.is_dir() and _run_files(d)]
            if not runs:
                raise KmshcError(f"{p}: no circuit_*.json in this folder or its sub-folders")
            for d in runs:
                out.extend(_entry(f, f"{d.name}:{_method(read_circuit(f), f)}") for f in _run_files(d))
        else:
            raise KmshcError(f"{p}: no such run directory or circuit file")
    labels = [e.label for e in out]
    if len(set(labels)) != len(labels):  # two files with the same folder name: fall back to full paths
        out = [Entry(str(e.path), e.path, e.circuit, e.method, e.gates) for e in out]
    return out


def infer_shape(entries: Sequence[Entry]) -> tuple[int, int]:
    """``(L, H)`` from any entry's gates (all heads), else the smallest grid holding every head."""
    for e in entries:
        if e.gates:
            hs = [parse_head(h) for h in e.gates]
            return max(h.layer for h in hs) + 1, max(h.head for h in hs) + 1
    total = entries[0].circuit.n_heads_total if entries else 0
    hs = [parse_head(h) for e in entries for h in e.heads]
    max_l = max((h.layer for h in hs), default=0) + 1
    for n_heads in range(max((h.head for h in hs), default=0) + 1, total + 1):
        if total % n_heads == 0 and total // n_heads >= max_l:
            return total // n_heads, n_heads
    raise KmshcError(f"cannot infer the layer x head shape from n_heads_total={total}; pass --shape LxH")
