"""What gate training reads off the frozen model: per-example margins (the task loss and the
``match`` objective) and the probe of the ``probe`` objective. Pure functions of the model and data.

The margin is the search's (:mod:`kmshc.engine.readout`): log p(good) − log p(bad) for pairs,
the gold label's logit minus the best other label's for label tasks.
"""
from __future__ import annotations

import torch
from torch import nn

from kmshc.engine.encoding import Batch, Encoded, fold_final_tokens
from kmshc.engine.probe import Probe, fit_probe
from kmshc.engine.readout import (class_margin, final_hidden, final_token_logprobs, label_logits, last_positions,
                                  sequence_logprobs)


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


def probe_targets(data: Encoded, rows: torch.Tensor) -> torch.Tensor:
    """Class per row ``[rows]``: the gold label, or 1 for a pair's good sentence and 0 for its bad one."""
    return data.gold[rows] if data.kind == "labels" else (1 - rows % 2)  # on the CPU, like ``rows``


def train_probe(model: nn.Module, data: Encoded, *, batch_size: int, probe_dim: int,
                device: torch.device | str) -> Probe:
    """PCA + logistic probe fitted on the full model's last-token features ``[rows, D]`` of ``data``."""
    feats = torch.zeros(len(data.seqs), model.config.hidden_size, device=device)
    with torch.no_grad():
        for b in data.batches(batch_size):
            b = b.to(device)
            h = final_hidden(model, b.input_ids, b.attention_mask)
            feats[b.rows.to(device)] = h[torch.arange(h.shape[0], device=device),
                                         last_positions(b.attention_mask)].float()
    n_classes = len(data.label_ids) if data.kind == "labels" else 2
    return fit_probe(feats, probe_targets(data, torch.arange(len(data.seqs))), probe_dim, n_classes)
