"""Reading scores off hidden states: log-probabilities, label logits, margins, and :class:`Outcome`.

Pure functions of a model's final hidden states ``[R, T, F]`` (no hooks, no state); the
:class:`kmshc.engine.scoring.Scorer` and the training module (:mod:`kmshc.train.module`) both score through them.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torchmetrics.functional.classification import binary_accuracy


@dataclass(frozen=True)
class Outcome:
    """Per-example results for ``M`` masks: ``correct`` ``[M, n]`` in [0, 1], ``margin`` ``[M, n]``.

    ``margin`` is log p(good) − log p(bad) for pairs, the gold logit minus the best other logit
    for labels, and the probe's correct-class logit margin for the probe.
    """

    correct: torch.Tensor
    margin: torch.Tensor

    @property
    def accuracy(self) -> torch.Tensor:
        """``[M]`` accuracy per mask, through torchmetrics.

        A fractional ``correct`` (the probe on pairs: 0.5 when one of the two sentences is
        classified right) counts as that fraction; thresholding would count it as fully right.
        """
        target = torch.ones_like(self.correct[0], dtype=torch.long)
        return torch.stack([c.sum() if not c.numel() else c.mean() if ((c > 0) & (c < 1)).any()
                            else binary_accuracy(c, target, threshold=0.5) for c in self.correct])


def final_hidden(model: nn.Module, ids: torch.Tensor, att: torch.Tensor) -> torch.Tensor:
    """Final (normed) hidden states ``[R, T, F]``; logits are formed later, in row chunks."""
    return model.base_model(input_ids=ids, attention_mask=att).last_hidden_state


def logits_from_hidden(model: nn.Module, h: torch.Tensor) -> torch.Tensor:
    logits = model.get_output_embeddings()(h).float()
    cap = getattr(model.config, "final_logit_softcapping", None)
    return torch.tanh(logits / cap) * cap if cap else logits


def sequence_logprobs(model: nn.Module, h: torch.Tensor, ids: torch.Tensor, att: torch.Tensor,
                      chunk_tokens: int = 1024, start: torch.Tensor | None = None) -> torch.Tensor:
    """Summed log-probability of tokens ``start..T−1`` of each row: ``[R]``. ``h``: ``[R, T, F]``.

    ``start`` ``[R]`` (default 1: every token after the start token) is the first scored token
    index. Logits are formed only at the scored, non-pad positions, ``chunk_tokens`` at a time,
    because the vocabulary projection (49k columns for SmolLM2) dominates the cost. Differentiable.
    """
    pos = torch.arange(1, ids.shape[1], device=ids.device)
    keep = att[:, 1:].bool()
    if start is not None:
        keep &= pos[None, :] >= start.to(ids.device)[:, None]
    rows, col = keep.nonzero(as_tuple=True)  # col is the predicting position; its target is col + 1
    parts = []
    for s in range(0, rows.numel(), chunk_tokens):
        r, c = rows[s:s + chunk_tokens], col[s:s + chunk_tokens]
        logits = logits_from_hidden(model, h[r, c])  # [P, V]
        parts.append(logits.gather(-1, ids[r, c + 1][:, None])[:, 0] - logits.logsumexp(-1))
    lp = torch.cat(parts) if parts else h.new_zeros(0, dtype=torch.float32)
    return torch.zeros(ids.shape[0], dtype=lp.dtype, device=lp.device).index_add(0, rows, lp)


def final_token_logprobs(model: nn.Module, h: torch.Tensor, att: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """``[R, 2]`` log-probabilities of each row's two ``candidates`` ``[R, 2]`` at its last real
    position; ``h`` ``[R, T, F]``. The scores of folded pairs (:func:`kmshc.engine.encoding.fold_final_tokens`)."""
    last = h[torch.arange(h.shape[0], device=h.device), last_positions(att)]
    logits = logits_from_hidden(model, last)
    return logits.gather(-1, candidates.to(logits.device)) - logits.logsumexp(-1, keepdim=True)


def first_differing_tokens(seqs: list[torch.Tensor]) -> torch.Tensor:
    """For pairs ``seqs[2i]``/``seqs[2i+1]``: per row, the first token index where the two differ.

    ``[2n]``, at least 1 (token 0 is the shared start token). Tokens before it are identical in
    both rows, so their log-probabilities cancel in the pair margin (under zero and mean
    ablation, which act per position alike on both rows).
    """
    out = []
    for g, b in zip(seqs[0::2], seqs[1::2]):
        n = min(len(g), len(b))
        diff = (g[:n] != b[:n]).nonzero()
        d = int(diff[0]) if diff.numel() else n
        out += [max(1, d)] * 2
    return torch.tensor(out, dtype=torch.long)


def last_positions(att: torch.Tensor) -> torch.Tensor:
    """Index of the last real token of each right-padded row: ``[R]``."""
    return att.sum(-1) - 1


def label_logits(model: nn.Module, h: torch.Tensor, att: torch.Tensor, label_ids: torch.Tensor) -> torch.Tensor:
    """Logits of the label tokens at the last real position: ``[R, K]``."""
    last = h[torch.arange(h.shape[0], device=h.device), last_positions(att)]
    return logits_from_hidden(model, last)[:, label_ids.to(h.device)]


def class_margin(logits: torch.Tensor, gold: torch.Tensor) -> torch.Tensor:
    """Gold logit minus the best other logit: ``[R]``. Positive means correct."""
    gold = gold.to(logits.device)
    g = logits.gather(-1, gold[:, None])[:, 0]
    other = logits.scatter(-1, gold[:, None], float("-inf")).max(-1).values
    return g - other
