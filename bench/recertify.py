"""Re-certify the circuits of a ``kmshc compare`` result with today's certificate (until decided).

    python bench/recertify.py docs/figures/analysis/compare.json --n 600 --out runs/recertify

For each searched circuit of ``compare.json`` it rebuilds the experiment the grid of
``scripts/analysis.sh`` ran (the circuit's task and seed, ``--n`` generated items or a BLiMP
paradigm from ``$KMSHC_DATA/blimp/`` cut to ``--n`` items, split 20/40/40, mean ablation, the
margin metric, the circuit's ε), certifies the circuit with :func:`kmshc.certify_circuit`, and
writes it with its new certificate to ``OUT/<label>.json`` (a rerun skips circuits already
written). Prints one markdown row per circuit: its verdict, the test items it used, the open or
failing checks, and the wall time.
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

from kmshc import Circuit, Experiment, certify_circuit
from kmshc.search.certificate import Certificate

BLIMP = "$KMSHC_DATA/blimp/{}.jsonl"


def experiment(row: dict, n: int, dtype: str) -> Experiment:
    common = dict(model="smollm2-135m", dtype=dtype, seed=int(row["seed"]), split_fractions=(0.2, 0.4, 0.4),
                  ablation=row.get("ablation") or "mean")
    if row["task"].startswith("determiner_noun"):
        return Experiment(task="blimp", data=BLIMP.format(row["task"]), limit=n, **common)
    return Experiment(task=row["task"], n=n, **common)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("compare_json", type=Path)
    p.add_argument("--n", type=int, default=600, help="items per task the grid was run with")
    p.add_argument("--out", type=Path, default=Path("runs/recertify"))
    p.add_argument("--only", nargs="*", default=None, help="labels (or their task prefix) to certify")
    p.add_argument("--max_test_items", type=int, default=4000)
    p.add_argument("--dtype", default="float32")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = [r for r in json.loads(args.compare_json.read_text())["circuits"] if r["method"] != "learned"]
    if args.only:
        rows = [r for r in rows if any(r["label"].startswith(o) for o in args.only)]
    print("| circuit | heads | verdict | test items (rounds) | open or failing | wall time |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        path = args.out / f"{r['label'].replace(':', '_')}.json"
        if not path.exists():
            exp = experiment(r, args.n, args.dtype)
            circ = Circuit(model=exp.model, task=r["task"], heads=tuple(r["heads"]), n_heads_total=r["n_heads_total"],
                           epsilon=r["epsilon"], seed=int(r["seed"]), config={"experiment": exp.to_dict()})
            t0 = time.perf_counter()
            done = certify_circuit(exp, circ, metric=r.get("metric") or "margin", max_test_items=args.max_test_items)
            done = replace(done, extra={"wall_time_s": round(time.perf_counter() - t0, 1)})
            done.save(path)
        c = Circuit.load(path)
        cert = Certificate.from_dict(c.certificate)
        why = ([f"{u.check} (needs ~{u.n_needed})" for u in cert.undecided] if cert.verdict == "undecided"
               else cert.reasons[:2] if cert.verdict == "refuted" else [])
        print(f"| {r['label']} | {len(c.heads)} | {cert.verdict} | {cert.n} ({len(cert.rounds)}) | {'; '.join(why)} | "
              f"{c.extra.get('wall_time_s')} s |", flush=True)


if __name__ == "__main__":
    main()
