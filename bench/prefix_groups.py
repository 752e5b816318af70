"""Grouped prefixes: layer-rows and time of a certificate-shaped stack, grouped vs not.

The certificate scores ``{C, C∖{h} for h in C, random controls}`` in one call. Those masks differ
at many layers, so the stack as a whole shares no prefix; grouping each mask with the reference
by the layer where it first differs lets ``C∖{h}`` skip the layers below ``h``. Layer-rows
(rows × decoder layers actually run, :mod:`kmshc.engine.cost`) are exact; the time is one run of each.

    python bench/prefix_groups.py --model smollm2-135m --task ioi --pairs 400 --heads 12 --controls 4
"""
from __future__ import annotations

import random
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import parse, parser, peak_rss_mb, report, setup, table, task_splits, timed  # noqa: E402

from kmshc.engine.architectures import head_shape  # noqa: E402
from kmshc.engine.scoring import Scorer  # noqa: E402
from kmshc.tasks import GENERATED_TASKS, make_task  # noqa: E402
from kmshc.tasks.base import Task, split_task  # noqa: E402
from kmshc.engine.tiny import tiny_model  # noqa: E402


def splits(name: str, pairs: int, seed: int) -> dict[str, Task]:
    """A generated task (``ioi``, ``greater_than``, ...) or a BLiMP paradigm, cut 60/20/20."""
    if name in GENERATED_TASKS:
        return split_task(make_task(name, seed=seed, n=5 * pairs), seed=seed, limit=5 * pairs)
    return task_splits(name, pairs, seed)


def certificate_stack(shape: tuple[int, int], k: int, controls: int, seed: int) -> torch.Tensor:
    """``[1 + k + controls, L, H]``: a random ``k``-head circuit, its ``k`` removals, random ``k``-head controls."""
    rng = random.Random(seed)
    n_layers, n_heads = shape
    every = range(n_layers * n_heads)

    def mask(heads) -> torch.Tensor:
        m = torch.zeros(n_layers * n_heads)
        m[list(heads)] = 1
        return m.view(n_layers, n_heads)

    circuit = set(rng.sample(every, k))
    stack = [mask(circuit)] + [mask(circuit - {h}) for h in sorted(circuit)]
    stack += [mask(rng.sample(every, k)) for _ in range(controls)]
    return torch.stack(stack)


def main(argv: list[str] | None = None) -> dict[str, float]:
    p = parser(__doc__.splitlines()[0], pairs=48)
    p.add_argument("--heads", type=int, default=12, help="heads in the circuit C")
    p.add_argument("--controls", type=int, default=4, help="random control sets of |C| heads")
    p.add_argument("--ablation", default="zero", choices=["zero", "mean", "counterfactual"])
    p.add_argument("--tiny_layers", type=int, default=8, help="decoder layers of a tiny-<arch> model (4 heads each)")
    args = parse(p, argv, __file__)
    model, tok = setup(args)
    if args.model.startswith("tiny-"):  # the registry's tiny models have 2 layers: too few to group
        model, tok = tiny_model(args.model[len("tiny-"):], n_layers=args.tiny_layers, seed=args.seed)
    parts = splits(args.task, args.pairs, args.seed)
    masks = certificate_stack(head_shape(model), args.heads, args.controls, args.seed)
    scorers = {name: Scorer(model, tok, parts["val"], ablation=args.ablation, train=parts["train"], prefix_cache=cache)
               for name, cache in (("not grouped (prefix cache off)", False), ("grouped by shared prefix", True))}
    results, rows = {}, []
    for name, scorer in scorers.items():
        seconds, out = timed(lambda: scorer.outcomes(masks))
        results[name] = (scorer.cost.seq_layer_rows, seconds, out.margin)
    base_rows, base_s, base_margin = results["not grouped (prefix cache off)"]
    for name, (layer_rows, seconds, margin) in results.items():
        per_example = layer_rows / (scorers[name].data.rows_per_example * scorers[name].n)
        rows.append([name, per_example, layer_rows / base_rows, seconds, seconds / base_s])
    grouped = results["grouped by shared prefix"]
    gap = float((grouped[2] - base_margin).abs().max())
    notes = [f"{args.model} ({args.dtype}), {scorers[name].n} pairs of `{args.task}`, {args.ablation} ablation; "
             f"stack of {masks.shape[0]} masks: C ({args.heads} random heads), its {args.heads} removals, "
             f"{args.controls} random controls; one run each; peak RSS {peak_rss_mb():.0f} MiB.",
             f"Largest |margin difference| between the two: {gap:.2g} (they may differ by float rounding)."]
    report(args, "prefix_groups: certificate-shaped stack, grouped vs not",
           table(["variant", "layer-rows / example", "× not grouped", "s (one run)", "× not grouped"], rows), notes)
    return {"layer_rows_ratio": grouped[0] / base_rows, "time_ratio": grouped[1] / base_s, "max_margin_gap": gap}


if __name__ == "__main__":
    main()
