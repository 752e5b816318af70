"""Evaluations per second for N masks: naive sequential vs batched vs batched + prefix cache.

Search-like workload: random k-bundles (k = |C|/4) switched off inside the macro-selected
layers (the top quarter of the network), every other head on; fresh masks every repeat.
Goal (issue #6): ≥ 2× the naive evaluations per second.

    python bench/masks.py --pairs 24 --repeats 2
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import interleaved, parse, parser, peak_rss_mb, report, setup, table, task_splits  # noqa: E402

from kmshc.engine.architectures import head_shape  # noqa: E402
from kmshc.engine.scoring import Scorer  # noqa: E402


def bundle_masks(n: int, n_layers: int, n_heads: int, first: int, gen: torch.Generator) -> torch.Tensor:
    """``[n, L, H]`` all ones except a random bundle of ``|C|/4`` heads off in layers ``≥ first``."""
    cand = (n_layers - first) * n_heads
    k = max(1, cand // 4)
    masks = torch.ones(n, n_layers * n_heads)
    for i in range(n):
        masks[i, first * n_heads + torch.randperm(cand, generator=gen)[:k]] = 0
    return masks.view(n, n_layers, n_heads)


def main(argv: list[str] | None = None) -> dict:
    p = parser(__doc__.splitlines()[0], pairs=24)
    p.add_argument("--n", type=int, nargs="+", default=[1, 4, 8, 16], help="masks per evaluation call")
    args = parse(p, argv, __file__)
    model, tok = setup(args)
    val = task_splits(args.task, args.pairs, args.seed)["val"]
    n_layers, n_heads = head_shape(model)
    first = n_layers - max(1, n_layers // 4)
    common = dict(ablation="zero", batch_size=32)
    naive = Scorer(model, tok, val, prefix_cache=False, skip_shared_tokens=False, **common)
    cached = Scorer(model, tok, val, skip_shared_tokens=False, **common)
    fast = Scorer(model, tok, val, **common)  # the library's defaults: every lever on
    gen = torch.Generator().manual_seed(args.seed)
    current: dict[str, torch.Tensor] = {}
    margins: dict[str, torch.Tensor] = {}

    def run(name: str, fn):
        def call():
            margins[name] = fn(current["masks"])
        return call

    def cold(masks):
        cached.cache.clear()
        return cached.outcomes(masks).margin

    variants = {
        "naive: one mask per forward": run("naive", lambda m: torch.cat([naive.outcomes(x).margin for x in m])),
        "batched": run("batched", lambda m: naive.outcomes(m).margin),
        "batched + prefix (cold cache)": run("cold", cold),
        "batched + prefix (warm cache)": run("warm", lambda m: cached.outcomes(m).margin),
        "batched + prefix + shared tokens skipped": run("fast", lambda m: fast.outcomes(m).margin),
    }
    # Warm-up (untimed): first-call allocations, and the split-layer hint a search's earlier
    # multi-mask calls would have left for later single-mask calls.
    current["masks"] = bundle_masks(2, n_layers, n_heads, first, gen)
    interleaved(variants, 1)
    rows, result, max_err = [], {}, 0.0
    for n in args.n:
        per_variant: dict[str, list[float]] = {k: [] for k in variants}
        for _ in range(args.repeats):
            current["masks"] = bundle_masks(n, n_layers, n_heads, first, gen)
            for k, t in interleaved(variants, 1).items():
                per_variant[k].append(t)
            max_err = max(max_err, *[(margins[v] - margins["naive"]).abs().max().item() for v in margins])
        base = sum(per_variant["naive: one mask per forward"])
        for k, ts in per_variant.items():
            rows.append([n, k, n * len(ts) / sum(ts), base / sum(ts)])
            result[(n, k)] = base / sum(ts)
    notes = [f"{args.model} ({args.dtype}), {val.name}: {len(val)} pairs per evaluation, zero ablation, "
             f"bundles in layers {first}–{n_layers - 1}; {args.repeats} repeats, variants interleaved; "
             f"peak RSS {peak_rss_mb():.0f} MiB.",
             f"Largest margin difference from the naive path: {max_err:.2e} (float rounding).",
             f"Prefix cache after the run: {len(cached.cache)} entries, {cached.cache.bytes / 2**20:.1f} MiB."]
    best = max(v for (n, k), v in result.items() if n == max(args.n))
    notes.append(f"Goal ≥ 2× over naive at N = {max(args.n)}: {'met' if best >= 2 else 'missed'} ({best:.2f}× best).")
    report(args, "masks: evaluations per second", table(["N", "variant", "evals / s", "× naive"], rows), notes)
    return result


if __name__ == "__main__":
    main()
