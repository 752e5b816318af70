"""Calibration of the sequential certificate on real per-example scores, by resampling.

    python bench/resample_calibration.py runs/default/circuit_searched.json --population 1200 --reps 400

Scores a circuit's certificate rows (``M``, ``B``, ``C`` and ``C`` without each head) once on
``--population`` items that none of its experiment's splits used (saved beside the circuit as
``resample_population.npz``; a rerun reads it back). Then draws test splits and fresh rounds from
that population, with replacement, and certifies each with the default sequential certificate:

* the circuit as it is: how often it ends verified (the power at the cap) and refuted;
* the truth placed on each boundary of the claim (the population recovery of ``C`` set to exactly
  ``ε − τ``; of ``C`` without one head set to ``ε + τ``; a head made irrelevant): how often such a
  circuit, which must not verify, is verified anyway.

Prints one markdown row per case.
"""
from __future__ import annotations

import argparse
import io
import math
import sys
from pathlib import Path

import numpy as np
import torch

from kmshc.experiment import Experiment
from kmshc.search.calibration import place_truth, population_recovery, resampled_verdicts
from kmshc.search.certificate import CertificateConfig
from kmshc.search.common import indices, mask_of
from kmshc.search.config import SearchConfig
from kmshc.types import atomic_write_bytes, read_circuit


def population(circuit_path: Path, size: int, dtype: str | None):
    """``({row: (margins [N], correct [N])}, heads, experiment)`` scored on ``size`` fresh items."""
    c = read_circuit(circuit_path)
    exp_d = dict(c.config["experiment"], **({"dtype": dtype} if dtype else {}))
    exp = Experiment.from_dict(exp_d, where=f"{circuit_path}: config.experiment")
    path = circuit_path.parent / "resample_population.npz"
    rows = ["full", "base", "circuit", *c.heads]
    if path.exists():
        with np.load(path) as d:
            if int(d["size"]) == size and list(d["rows"]) == rows:
                return {r: (d[f"x_{i}"], d[f"a_{i}"]) for i, r in enumerate(rows)}, c.heads, c
    shape = exp.shape
    C = set(indices(c.heads, shape))
    sets = [set(range(shape[0] * shape[1])), set(), C, *[C - {h} for h in indices(c.heads, shape)]]
    items = exp.fresh_items().take(size)
    print(f"scoring {len(sets)} head sets on {len(items)} fresh items of {exp.task_name} ...", file=sys.stderr)
    out = exp.scorer_for("test", items=items).outcomes(torch.stack([mask_of(s, shape) for s in sets]))
    x, a = out.margin.double().numpy(), out.correct.double().numpy()
    buf = io.BytesIO()
    np.savez(buf, size=size, rows=np.array(rows), **{f"x_{i}": x[i] for i in range(len(rows))},
             **{f"a_{i}": a[i] for i in range(len(rows))})
    atomic_write_bytes(path, buf.getvalue())
    return {r: (x[i], a[i]) for i, r in enumerate(rows)}, c.heads, c


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("circuit", type=Path)
    p.add_argument("--population", type=int, default=1200)
    p.add_argument("--reps", type=int, default=400)
    p.add_argument("--max_test_items", type=int, default=SearchConfig.max_test_items)
    p.add_argument("--dtype", default=None, help="override the experiment's dtype")
    args = p.parse_args()
    pop, heads, c = population(args.circuit, args.population, args.dtype)
    cfg = CertificateConfig(**{k: v for k, v in (c.config.get("search") or {}).get("certificate", {}).items()
                               if k in CertificateConfig.__dataclass_fields__})
    eps, tau, n0 = c.epsilon, cfg.tau, int(c.certificate["rounds"][0]["n"] if c.certificate.get("rounds")
                                           else c.certificate["n"])
    cases = [("as found", pop, "")]
    cases.append((f"r(C) = eps - tau = {eps - tau:.2f}", place_truth(pop, "circuit", eps - tau), "must not verify"))
    for h in heads:
        cases.append((f"r(C \\ {h}) = eps + tau = {eps + tau:.2f}", place_truth(pop, h, eps + tau), "must not verify"))
    cases.append((f"{heads[-1]} irrelevant", {**pop, heads[-1]: pop["circuit"]}, "must not verify"))
    print(f"Circuit {' '.join(heads)} ({c.task}), eps = {eps}, tau = {tau}; population of {len(pop['full'][0])} "
          f"items: r(C) = {population_recovery(pop, 'circuit'):.3f}, without each head "
          + ", ".join(f"{h} {population_recovery(pop, h):.3f}" for h in heads)
          + f". Test split {n0}, cap {args.max_test_items}, {args.reps} draws each.\n")
    print("| truth | verified | refuted | undecided | mean items |")
    print("|---|---|---|---|---|")
    se = 3 * math.sqrt(cfg.alpha * (1 - cfg.alpha) / args.reps)
    for i, (name, case_pop, note) in enumerate(cases):
        v = resampled_verdicts(case_pop, heads, n0=n0, cap=args.max_test_items, reps=args.reps, epsilon=eps, cfg=cfg,
                               metric=c.certificate.get("metric", "margin"), seed=i)
        flag = f" ({note}: at most {cfg.alpha + se:.3f})" if note else ""
        print(f"| {name}{flag} | {v['verified']:.3f} | {v['refuted']:.3f} | {v['undecided']:.3f} | {v['items']:.0f} |",
              flush=True)


if __name__ == "__main__":
    main()
