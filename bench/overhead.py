"""Overhead of the gating hooks: forward passes with gates all at 1 against no hooks at all.

Goal (issue #6): all-ones gates cost ≤ 1.05× the unhooked forward. Rows with gates just below
1 show what the hook arithmetic itself costs when every layer must be touched.

    python bench/overhead.py --pairs 48 --repeats 5
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import interleaved, parse, parser, peak_rss_mb, report, setup, table, task_splits  # noqa: E402

from kmshc.engine.ablation import make_ablation  # noqa: E402
from kmshc.engine.architectures import head_shape  # noqa: E402
from kmshc.engine.encoding import encode  # noqa: E402
from kmshc.engine.hooks import gated  # noqa: E402
from kmshc.engine.readout import final_hidden  # noqa: E402


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = parse(parser(__doc__.splitlines()[0], pairs=48), argv, __file__)
    model, tok = setup(args)
    splits = task_splits(args.task, args.pairs, args.seed)
    data = encode(splits["val"], tok)
    batches = list(data.batches(32))
    n_layers, n_heads = head_shape(model)
    mean = make_ablation("mean", model, encode(splits["train"], tok))

    def forward(gates=None, values=None):
        def run():
            with torch.inference_mode():
                for b in batches:
                    if gates is None:
                        final_hidden(model, b.input_ids, b.attention_mask)
                        continue
                    g = gates if gates.dim() == 2 else gates.expand(b.input_ids.shape[0], -1, -1)
                    with gated(model, g, None if values is None else values.values(b)):
                        final_hidden(model, b.input_ids, b.attention_mask)
        return run

    ones = torch.ones(n_layers, n_heads)
    variants = {
        "no hooks": forward(),
        "gates = 1, one mask [L,H]": forward(ones),
        "gates = 1, per row [B,L,H]": forward(ones[None]),
        "gates = 1, mean ablation": forward(ones, mean),
        "gates = 0.999 (every hook works), zero": forward(ones * 0.999),
        "gates = 0.999, mean ablation": forward(ones * 0.999, mean),
    }
    forward()()  # warm-up: first-call allocations are not the hooks' cost
    times = interleaved(variants, args.repeats)
    base = times["no hooks"]
    rows = [[k, t, t / base] for k, t in times.items()]
    ratio = times["gates = 1, one mask [L,H]"] / base
    notes = [f"{args.model} ({args.dtype}), {data.n} pairs ({2 * data.n} sentences) of `{args.task}` per pass, "
             f"median of {args.repeats} interleaved repeats; peak RSS {peak_rss_mb():.0f} MiB.",
             f"Goal ≤ 1.05× with gates all at 1: {'met' if ratio <= 1.05 else 'missed'} ({ratio:.3f}×). "
             "Layers whose gates are all exactly 1 are left untouched by the hook, so this is the cost of "
             "the hook call itself."]
    report(args, "overhead: gating hooks vs no hooks", table(["variant", "s / pass", "× no hooks"], rows), notes)
    return {k: t / base for k, t in times.items()}


if __name__ == "__main__":
    main()
