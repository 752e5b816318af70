"""Causal Head Gating (PyPI ``nam-causal-head-gating``, optional) as a ranking for ``bench/rankers.py``.

CHG learns one sigmoid mask per head on a next-token loss, in 3 stages (unregularised, +L1 that
pushes masks to 0, −L1 that pushes them to 1), as ``bench/peer_chg.py`` runs it: each minimal
pair becomes a prompt (the words both sentences share) and a target (the rest of the good one).
The ranking is the +L1 stage's final mask, highest first: a head that stays on under pressure to
switch off is the one the task needs (CHG's ``necessary_heads()`` reads the same masks at 0.5),
ties broken by the −L1 stage's mask. Its cost is counted by the same row hooks as kmshc's own
(:func:`kmshc.engine.hooks.count_rows`), one prompt per example.
"""
from __future__ import annotations

import copy
import time
from pathlib import Path

import torch

from peer_chg import prompt_target
from rankers_steps import Skip

from kmshc.engine.cost import RowCount
from kmshc.engine.hooks import count_rows
from kmshc.experiment import Experiment
from kmshc.search.gates_file import gates_record, write_gates

STEPS, BATCH = 15, 16  # bench/peer_chg.py's defaults: updates per stage, prompts per update


def final_mask(masks: dict, stage: str) -> torch.Tensor:
    """A stage's last mask ``[L, H]`` (the mean over CHG's masks when it trained several)."""
    m = masks[stage][-1].detach().float()
    return m.mean(0) if m.ndim == 3 else m


def chg_scores(masks: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """``(score [L, H], start [L, H])``: the +L1 mask (ties by the −L1 mask) and CHG's necessary heads."""
    necessary, sufficient = final_mask(masks, "positive"), final_mask(masks, "negative")
    return necessary + 1e-3 * sufficient, (necessary >= 0.5).float()


def chg_run(exp: Experiment, run: Path, seed: int, steps: int = STEPS, batch: int = BATCH) -> None:
    """Fit CHG on ``exp``'s train split and write ``run/gates.json`` (the warm search can start from it)."""
    try:
        from causal_head_gating import CHGAnalyzer, CHGDataset
    except ImportError as e:
        raise Skip(f"package nam-causal-head-gating not installed ({e}); "
                   "pip install --no-deps nam-causal-head-gating einops pandas") from None
    model, tok = exp.loaded
    items = exp.splits["train"].items
    texts, targets = zip(*(prompt_target(it.good, it.bad) for it in items))
    chg_tok = copy.deepcopy(tok)  # CHG adds a marker token to the tokenizer it is given
    if chg_tok.pad_token is None:
        chg_tok.pad_token = chg_tok.eos_token
    torch.manual_seed(seed)
    n_layers, n_heads = exp.shape
    cost = RowCount(n_layers, rows_per_example=1)
    t0 = time.perf_counter()
    with torch.enable_grad(), count_rows(model, cost):
        analyzer = CHGAnalyzer(model, chg_tok, device=str(next(model.parameters()).device))
        data = CHGDataset.from_texts(texts=list(texts), targets=list(targets), tokenizer=chg_tok)
        res = analyzer.fit_dataset(data, num_masks=1, num_updates=steps, num_reg_updates=steps,
                                   batch_size=batch, verbose=False)
    wall = time.perf_counter() - t0
    score, start = chg_scores(res.masks)
    write_gates(run, gates_record(exp, score, start, gate_threshold=0.5, method="chg", steps=steps, split="train",
                                  n=len(items), metric="CHG +L1 mask", cost=cost.to_dict(),
                                  wall_time_s=round(wall, 3)))
