"""Head diagnostics from attention patterns alone (no ablation), each an ``[L, H]`` tensor.

* previous-token score: mean attention from position ``t`` to ``t − 1`` on random tokens;
* current-token score: the same, to ``t`` itself (heads that re-write the current token);
* duplicate-token score: on a random sequence repeated once (``r r``), attention from a token
  of the second copy to the same token in the first copy;
* induction score: on ``r r``, attention from a token of the second copy to the token *after*
  its earlier occurrence (Olsson et al., 2022, "In-context learning and induction heads");
* position score: attention from each sequence's final position to a given position per
  example (for IOI: to the indirect-object name, as in Wang et al., 2022);
  :func:`answer_positions` finds, for a minimal pair, the position read and the earlier
  occurrence of the answer token (the IO name in IOI).

Patterns come from ``output_attentions=True`` under eager attention (SDPA kernels return no
weights); :func:`eager_attention` switches the model's implementation for the duration and
restores it in ``finally``. With grouped-query attention the patterns are per query head, so
``H`` is the number of query heads, as everywhere in kmshc.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, fields
from typing import Iterator, Sequence

import torch
from torch import nn

from kmshc.engine.architectures import head_shape
from kmshc.types import KmshcError


# ---------------------------------------------------------------- pure scores on patterns
def attention_at(patterns: torch.Tensor, query: torch.Tensor, key: torch.Tensor,
                 valid: torch.Tensor | None = None) -> torch.Tensor:
    """Mean attention weight from ``query`` to ``key`` positions, per head.

    Args:
        patterns: ``[L, B, H, T, T]`` attention weights (query position, then key position).
        query, key: ``[B, Q]`` positions; pair ``(query[b, q], key[b, q])`` is one observation.
        valid: ``[B, Q]`` bool, which observations count (default: all).
    Returns:
        ``[L, H]``: the mean over valid observations.
    """
    L, B, H, T, _ = patterns.shape
    if query.shape != key.shape or query.shape[0] != B:
        raise ValueError(f"query and key must both be [B={B}, Q], got {tuple(query.shape)} and {tuple(key.shape)}")
    valid = torch.ones_like(query, dtype=torch.bool) if valid is None else valid.bool()
    if not valid.any():
        raise ValueError("no valid (query, key) observation to average over")
    rows = patterns.gather(3, query.clamp(0, T - 1)[None, :, None, :, None].expand(L, B, H, -1, T))
    picked = rows.gather(4, key.clamp(0, T - 1)[None, :, None, :, None].expand(L, B, H, -1, 1))[..., 0]
    w = valid.to(picked.dtype)[None, :, None, :]  # [1, B, 1, Q]
    return (picked * w).sum(dim=(1, 3)) / w.sum()


def _repeat_positions(batch: int, first: int, period: int, shift: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Queries: the second copy of ``r r`` (``first + period …``); keys: ``query − period + shift``."""
    q = torch.arange(first + period, first + 2 * period).expand(batch, -1)
    return q, q - period + shift


def previous_token_scores(patterns: torch.Tensor, *, first: int = 1, period: int) -> torch.Tensor:
    """``[L, H]``: attention to ``t − 1`` from the first copy's positions ``first+1 … first+period−1``.

    Only the first copy counts, where tokens are random and no head has a reason to look back
    further than one step. ``patterns``: ``[L, B, H, T, T]`` on sequences laid out as in
    :func:`repeated_random_tokens`.
    """
    q = torch.arange(first + 1, first + period).expand(patterns.shape[1], -1)
    return attention_at(patterns, q, q - 1)


def current_token_scores(patterns: torch.Tensor, *, first: int = 1, period: int) -> torch.Tensor:
    """``[L, H]``: attention from each position of the first copy to itself (see :func:`previous_token_scores`)."""
    q = torch.arange(first + 1, first + period).expand(patterns.shape[1], -1)
    return attention_at(patterns, q, q)


def duplicate_token_scores(patterns: torch.Tensor, *, first: int = 1, period: int) -> torch.Tensor:
    """``[L, H]``: attention from each second-copy token to its own earlier occurrence."""
    return attention_at(patterns, *_repeat_positions(patterns.shape[1], first, period, shift=0))


def induction_scores(patterns: torch.Tensor, *, first: int = 1, period: int) -> torch.Tensor:
    """``[L, H]``: attention from each second-copy token to the token after its earlier occurrence."""
    return attention_at(patterns, *_repeat_positions(patterns.shape[1], first, period, shift=1))


def final_position_scores(patterns: torch.Tensor, attention_mask: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``[L, H]``: attention from each row's last real token to ``targets[b]`` (e.g. the IO name).

    ``attention_mask`` ``[B, T]`` marks real tokens of right-padded rows; ``targets`` ``[B]``.
    """
    last = attention_mask.long().sum(1) - 1
    if (targets > last).any() or (targets < 0).any():
        raise ValueError("a target position lies outside its row's tokens")
    return attention_at(patterns, last[:, None], targets.long()[:, None])


def answer_positions(good: Sequence[torch.Tensor], bad: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor,
                                                                                          torch.Tensor]:
    """Per pair: the last shared position and the latest earlier occurrence of the good answer token.

    ``good[i]`` and ``bad[i]`` are 1-D token ids of a minimal pair that first differ at ``d``:
    the model reads position ``d − 1`` (the query) and predicts ``good[i][d]``. The key is the
    last position ``p < d`` holding that same token: for IOI the indirect-object name (Wang et
    al. 2022's name movers attend there), for the induction task the word to copy. A pair whose
    answer does not occur earlier (greater-than, BLiMP) is not valid.
    Returns ``query``, ``key`` (``[n]`` long) and ``valid`` (``[n]`` bool).
    """
    query, key, valid = [], [], []
    for g, b in zip(good, bad, strict=True):
        n = min(len(g), len(b))
        diff = (g[:n] != b[:n]).nonzero()
        d = int(diff[0]) if len(diff) else n
        earlier = (g[:d] == g[d]).nonzero() if 0 < d < len(g) else torch.empty(0, 1)
        query.append(max(d - 1, 0))
        key.append(int(earlier[-1]) if len(earlier) else 0)
        valid.append(len(earlier) > 0)
    return torch.tensor(query), torch.tensor(key), torch.tensor(valid)


# ---------------------------------------------------------------- running the model
@contextmanager
def eager_attention(model: nn.Module) -> Iterator[nn.Module]:
    """Switch ``model`` to eager attention (which returns weights) and restore it in ``finally``."""
    before = model.config._attn_implementation
    if before != "eager":
        model.set_attn_implementation("eager")
    try:
        yield model
    finally:
        if before != "eager":
            model.set_attn_implementation(before)


def attention_patterns(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                       batch_size: int = 16) -> torch.Tensor:
    """``[L, B, H, T, T]`` float32 attention weights of ``model`` on ``input_ids`` ``[B, T]``."""
    n_layers, n_heads = head_shape(model)
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    device = next(model.parameters()).device
    chunks = []
    with eager_attention(model), torch.no_grad():
        for s in range(0, len(input_ids), batch_size):
            out = model(input_ids=input_ids[s:s + batch_size].to(device),
                        attention_mask=attention_mask[s:s + batch_size].to(device), output_attentions=True)
            att = out.attentions
            if att is None or len(att) != n_layers or att[0].shape[1] != n_heads:
                raise KmshcError(f"{type(model).__name__} returned no per-head attention weights under eager "
                                 f"attention (expected {n_layers} layers x {n_heads} heads)")
            chunks.append(torch.stack([a.float().cpu() for a in att]))
    return torch.cat(chunks, dim=1)


def repeated_random_tokens(token_ids: Sequence[int] | torch.Tensor, *, n_seq: int, period: int, start_id: int,
                           seed: int = 0) -> torch.Tensor:
    """``[n_seq, 1 + 2·period]`` ids: the start token, then ``r r`` with ``r`` drawn from ``token_ids``.

    Draws without replacement inside ``r`` (when ``token_ids`` allows), so every token of the
    second copy has exactly one earlier occurrence.
    """
    pool = torch.as_tensor(token_ids, dtype=torch.long)
    if pool.numel() < 2:
        raise KmshcError("repeated_random_tokens: need at least 2 candidate token ids")
    gen = torch.Generator().manual_seed(seed)
    if pool.numel() >= period:
        r = torch.stack([pool[torch.randperm(pool.numel(), generator=gen)[:period]] for _ in range(n_seq)])
    else:
        r = pool[torch.randint(pool.numel(), (n_seq, period), generator=gen)]
    return torch.cat([torch.full((n_seq, 1), start_id, dtype=torch.long), r, r], dim=1)


@dataclass(frozen=True)
class HeadDiagnostics:
    """Per-head scores, each ``[L, H]``."""

    previous_token: torch.Tensor
    duplicate_token: torch.Tensor
    induction: torch.Tensor
    current_token: torch.Tensor

    def to_dict(self) -> dict[str, list[list[float]]]:
        return {f.name: [[round(float(x), 4) for x in row] for row in getattr(self, f.name)] for f in fields(self)}


def head_diagnostics(model: nn.Module, tokenizer, *, n_seq: int = 32, period: int = 10, seed: int = 0,
                     token_ids: Sequence[int] | None = None) -> HeadDiagnostics:
    """Previous-token, duplicate-token, induction and current-token scores on ``n_seq`` repeated random sequences.

    ``token_ids``: the pool random tokens are drawn from (default: every non-special id).
    """
    from kmshc.engine.encoding import start_token_id
    if token_ids is None:
        special = set(tokenizer.all_special_ids)
        token_ids = [i for i in range(len(tokenizer)) if i not in special]
    ids = repeated_random_tokens(token_ids, n_seq=n_seq, period=period, start_id=start_token_id(tokenizer), seed=seed)
    patterns = attention_patterns(model, ids)
    return HeadDiagnostics(previous_token=previous_token_scores(patterns, period=period),
                           duplicate_token=duplicate_token_scores(patterns, period=period),
                           induction=induction_scores(patterns, period=period),
                           current_token=current_token_scores(patterns, period=period))
