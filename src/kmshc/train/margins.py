"""Per-example margins of a training batch, read off the final hidden states: what the task
loss and the ``match`` objective score. Pure functions of the frozen model and a batch.

The margin is the search's (:mod:`kmshc.engine.readout`): log p(good) − log p(bad) for pairs,
the gold label's logit minus the best other label's for label tasks.
"""
from __future__ import annotations

import torch
from torch import nn

from kmshc.engine.encoding import Batch, Encoded, fold_final_tokens
from kmshc.engine.readout import class_margin, final_hidden, final_token_logprobs, label_logits, sequence_logprobs


def pair_logprobs(model: nn.Module, batch: Batch, h: torch.Tensor) -> torch.Tensor:
    """``[n, 2]`` log-probabilities of each pair's good and bad continuation, from hidden states
    ``h`` ``[rows, T, D]`` (one row per pair when the batch is folded, else two)."""
    if batch.candidates is not None:  # folded pairs: both final tokens from one row
        return final_token_logprobs(model, h, batch.attention_mask, batch.candidates)
    return sequence_logprobs(model, h, batch.input_ids, batch.attention_mask).view(-1, 2)


def margins(model: nn.Module, batch: Batch, h: torch.Tensor) -> torch.Tensor:
    """``[n]`` per-example margins of ``batch`` from hidden states ``h``."""
    data = batch.data
    if data.kind == "labels":
        logits = label_logits(model, h, batch.attention_mask, data.label_ids)
        return class_margin(logits, data.gold[batch.examples].to(h.device))
    lp = pair_logprobs(model, batch, h)
    return lp[:, 0] - lp[:, 1]


def full_margins(model: nn.Module, data: Encoded, *, batch_size: int, fold: bool,
                 device: torch.device | str) -> torch.Tensor:
    """``[n]``: the full model's margin on every example of ``data`` (no hooks: nothing ablated)."""
    out = torch.zeros(data.n)
    with torch.no_grad():
        for b in data.batches(batch_size):
            examples = b.examples
            b = (fold_final_tokens(b) if fold else b).to(device)
            out[examples] = margins(model, b, final_hidden(model, b.input_ids, b.attention_mask)).float().cpu()
    return out
