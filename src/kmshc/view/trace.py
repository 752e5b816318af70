"""Section 6 data: the search's path and where its example forwards went; pure, from run files.

``search_state.json`` holds ``log`` (every scored set, in order, as ``[mask key, score]``; the key
is ``"<n bits>:<hex>"`` of the row-major 0/1 mask) and ``trace`` (each decision with the cumulative
``example_forwards`` spent when it was taken). The size of each scored set is the popcount of
its key; the circuit's size after each decision follows from the decision's kind.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

from kmshc.types import Circuit

# decisions that shrink the circuit, and the event field naming what they removed
_REMOVES = {"drop_head": None, "remove_head": None, "drop_block": "heads", "remove_block": "heads",
            "remove_bundle": "bundle", "remove_failing_bundle": "bundle"}


@dataclass(frozen=True)
class Step:
    """One decision: its ``event`` kind, the circuit size after it, the forwards it cost."""

    event: str
    size: Optional[int]
    forwards: float


@dataclass(frozen=True)
class Trace:
    """``set_sizes[i]``: size of the ``i``-th scored set; ``steps``: the decisions; ``cost``:
    example forwards per phase (training, search, certificate) where recorded."""

    set_sizes: tuple[int, ...]
    steps: tuple[Step, ...]
    by_event: tuple[tuple[str, float], ...]
    cost: tuple[tuple[str, float], ...]


def key_size(key: str) -> int:
    """Heads kept in the mask of a search-state ``key`` (``"270:1f..."``) -> popcount."""
    return bin(int(str(key).split(":", 1)[1] or "0", 16)).count("1")


def steps_of(trace: Sequence[Mapping[str, Any]]) -> list[Step]:
    """The circuit size after each decision (``None`` until a ``threshold`` event gives the start)."""
    out, size, spent = [], None, 0.0
    for ev in trace:
        kind = str(ev.get("event", "?"))
        if kind == "threshold":
            size = ev.get("start") if isinstance(ev.get("start"), int) else size
        elif kind == "restored_in_gate_order" and size is not None:
            size += int(ev.get("added", 0))
        elif kind in _REMOVES and size is not None:
            field = _REMOVES[kind]
            size -= len(ev.get(field) or ()) if field else 1
        now = float(ev.get("example_forwards") or spent)
        out.append(Step(kind, size, max(now - spent, 0.0)))
        spent = max(now, spent)
    return out


def phase_costs(circuit: Circuit, gates: Optional[Mapping[str, Any]]) -> list[tuple[str, float]]:
    """Example forwards of training (or ranking), the search and the certificate, where recorded."""
    out = []
    g_cost = (gates or {}).get("cost")
    if isinstance(g_cost, dict) and isinstance(g_cost.get("example_forwards"), (int, float)):
        out.append(("gates (training or ranking)", float(g_cost["example_forwards"])))
    if circuit.example_forwards is not None:
        out.append(("search", float(circuit.example_forwards)))
    v = circuit.extra.get("verify_cost")
    if isinstance(v, dict) and isinstance(v.get("example_forwards"), (int, float)):
        out.append(("certificate", float(v["example_forwards"])))
    return out


def search_trace(state: Optional[Mapping[str, Any]], circuit: Circuit,
                 gates: Optional[Mapping[str, Any]] = None) -> Trace:
    """Section 6 from ``search_state.json`` (``None``: a learned circuit, only the phase costs)."""
    state = state or {}
    sizes = tuple(key_size(k) for k, *_ in state.get("log", []) if isinstance(k, str))
    steps = steps_of([e for e in state.get("trace", []) if isinstance(e, dict)])
    by_event: dict[str, float] = {}
    for s in steps:
        by_event[s.event] = by_event.get(s.event, 0.0) + s.forwards
    ranked = tuple(sorted(by_event.items(), key=lambda kv: -kv[1]))
    return Trace(sizes, tuple(steps), ranked, tuple(phase_costs(circuit, gates)))
