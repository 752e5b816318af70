"""Causal Head Gating (PyPI ``nam-causal-head-gating``) side by side with a kmshc circuit.

Both head sets are scored by the same kmshc scorer on the same test split, with only the set
kept and every other head ablated the same way. CHG is given our already-loaded model and a
copy of our tokenizer (its ``from_pretrained`` would download). CHG learns next-token masks, so
each minimal pair becomes a prompt (the words both sentences share) and a target (the rest of
the good sentence).

    pip install -e '.[bench]'   # or: pip install --no-deps nam-causal-head-gating einops pandas
    python bench/peer_chg.py --circuit runs/blimp/circuit_searched.json --steps 15
"""
from __future__ import annotations

import copy
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import parse, parser, peak_rss_mb, report, setup, table, task_splits  # noqa: E402

from kmshc.engine.architectures import head_shape  # noqa: E402
from kmshc.experiment import Experiment  # noqa: E402
from kmshc.engine.scoring import Scorer  # noqa: E402
from kmshc.types import parse_head  # noqa: E402


def prompt_target(good: str, bad: str) -> tuple[str, str]:
    """Split the good sentence after the words it shares with the bad one (at least one word of prompt)."""
    g, b = good.split(), bad.split()
    k = 0
    while k < min(len(g), len(b)) and g[k] == b[k]:
        k += 1
    k = max(1, min(k, len(g) - 1))
    return " ".join(g[:k]), " " + " ".join(g[k:])


def mask_of(heads, shape: tuple[int, int]) -> torch.Tensor:
    m = torch.zeros(shape)
    for layer, head in heads:
        m[layer, head] = 1
    return m


def main(argv: list[str] | None = None) -> dict:
    p = parser(__doc__.splitlines()[0], pairs=48)
    p.add_argument("--circuit", default=None, help="a kmshc circuit JSON; its experiment defines data and ablation")
    p.add_argument("--steps", type=int, default=15, help="CHG updates per stage (3 stages)")
    p.add_argument("--chg-batch", type=int, default=16)
    args = parse(p, argv, __file__)
    try:
        from causal_head_gating import CHGAnalyzer, CHGDataset
    except ImportError as e:
        report(args, "peer_chg: Causal Head Gating vs kmshc", "(not run)",
               [f"`import causal_head_gating` failed: {e!r}. Install the `bench` extra."])
        return {}
    circuit = json.loads(Path(args.circuit).read_text()) if args.circuit and Path(args.circuit).exists() else None
    if circuit is not None:
        # Same data, splits and ablation as the circuit; --dtype overrides (bf16 is ~10x slower on AVX2-only CPUs).
        exp = Experiment(**{**circuit["config"]["experiment"], "dtype": args.dtype})
        model, tok = exp.loaded
        splits, test = exp.splits, exp.scorer_for("test")
    else:
        model, tok = setup(args)
        splits = task_splits(args.task, args.pairs, args.seed)
        test = Scorer(model, tok, splits["test"], ablation="zero")
    shape = head_shape(model)
    for q in model.parameters():
        q.requires_grad_(False)

    texts, targets = zip(*(prompt_target(it.good, it.bad) for it in splits["train"].items))
    chg_tok = copy.deepcopy(tok)  # CHG adds a marker token to the tokenizer it is given
    if chg_tok.pad_token is None:
        chg_tok.pad_token = chg_tok.eos_token
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    analyzer = CHGAnalyzer(model, chg_tok, device="cpu")
    data = CHGDataset.from_texts(texts=list(texts), targets=list(targets), tokenizer=chg_tok)
    res = analyzer.fit_dataset(data, num_masks=1, num_updates=args.steps, num_reg_updates=args.steps,
                               batch_size=args.chg_batch, verbose=False)
    chg_time = time.perf_counter() - t0
    sets = {"CHG sufficient_heads()": (res.sufficient_heads(), chg_time),
            "CHG necessary_heads()": (res.necessary_heads(), chg_time)}
    if circuit is not None:
        heads = [parse_head(h, *shape, where=f"{args.circuit}: heads") for h in circuit["heads"]]
        sets["kmshc circuit"] = ([(h.layer, h.head) for h in heads], circuit.get("wall_time_s", float("nan")))
    rows, out = [], {}
    masks = torch.stack([mask_of(h, shape) for h, _ in sets.values()] + [torch.ones(shape), torch.zeros(shape)])
    acc = test.outcomes(masks).accuracy.tolist()
    for (name, (heads, secs)), a in zip(sets.items(), acc):
        rows.append([name, len(heads), a, secs])
        out[name] = (len(heads), a)
    rows += [["all heads", shape[0] * shape[1], acc[-2], "-"], ["no heads", 0, acc[-1], "-"]]
    ablation = test.ablation.name
    notes = [f"{'circuit ' + args.circuit if circuit else args.task} on {args.model if not circuit else exp.model}; "
             f"test split {test.n} pairs, {ablation} ablation of every head outside the set; CHG: 1 mask, "
             f"{args.steps} updates per stage × 3 stages, batch {args.chg_batch}, {len(texts)} training prompts; "
             f"peak RSS {peak_rss_mb():.0f} MiB.",
             "CHG's `sufficient_heads()` reads its negative-L1 stage (masks pushed towards 1), "
             "`necessary_heads()` its positive-L1 stage (pushed towards 0); both are scored.",
             "kmshc wall time is the search's own (`wall_time_s` of the circuit), without gate training."]
    report(args, "peer_chg: Causal Head Gating vs kmshc", table(["set", "heads", "test accuracy", "wall s"], rows), notes)
    return out


if __name__ == "__main__":
    main()
