"""``kmshc show CIRCUIT.json``: a circuit and its certificate, in lines a person reads in seconds."""
from __future__ import annotations

import argparse

from kmshc.search.certificate import Certificate
from kmshc.types import Circuit, read_circuit


def describe(circ: Circuit) -> list[str]:
    """Header lines (model, task, size, cost) and the certificate's own summary."""
    lines = [f"model {circ.model}, task {circ.task}, ablation {circ.ablation}, epsilon {circ.epsilon}",
             f"{len(circ.heads)} of {circ.n_heads_total} heads, {circ.evaluations} search evaluations"
             + (f", method {circ.extra['method']}" if circ.extra.get("method") else ""),
             f"heads: {' '.join(circ.heads) if circ.heads else '(none)'}"]
    if circ.certificate:
        lines += Certificate.from_dict(circ.certificate).summary()
    else:
        lines.append("no certificate (a learned circuit): certify it with `kmshc verify PATH`")
    return lines


def _show(args: argparse.Namespace) -> None:
    print("\n".join(describe(read_circuit(args.circuit))))


def add_show_parser(sub) -> None:
    s = sub.add_parser("show", help="print a circuit file and its certificate")
    s.add_argument("circuit", help="a circuit JSON file (circuit_searched.json, circuit_verified.json, ...)")
    s.set_defaults(func=_show)
