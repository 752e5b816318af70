"""The toy induction task: random tokens ``t0 … t{V-1}`` with one segment repeated later.

The same sampler feeds the toy model's training (:mod:`kmshc.toy.induction`) and the ``toy_induction``
minimal pairs, so the pairs come from the distribution the model was trained on. Both the
segment's start and the gap between its two copies are random (see :mod:`kmshc.toy.induction` for why).
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from kmshc.tasks.base import PairItem, Task
from kmshc.types import KmshcError


@dataclass(frozen=True)
class InductionBatch:
    """``tokens`` ``[B, T]`` (0-based token indices, no start token); the segment of length
    ``length[b]`` at ``src[b]`` is repeated at ``dst[b]`` (all ``[B]``)."""

    tokens: torch.Tensor
    src: torch.Tensor
    dst: torch.Tensor
    length: torch.Tensor

    def loss_mask(self) -> torch.Tensor:
        """``[B, T]``: True at the copied tokens that are predictable (all but the copy's first)."""
        pos = torch.arange(self.tokens.shape[1])
        rel = pos[None, :] - self.dst[:, None]
        return (rel >= 1) & (rel < self.length[:, None])


# The toy's layout: 64 token words, 32 random tokens per sequence, a segment of 4 to 16 tokens
# copied once. Long segments give many predictable tokens per sequence, which shortens the loss
# plateau before the induction circuit forms (~450 steps against ~1300 with 4 to 10, seed 0).
VOCAB, SEQ_LEN, MIN_SEGMENT, MAX_SEGMENT = 64, 32, 4, 16


def check_layout(*, seq_len: int, vocab: int, min_segment: int, max_segment: int) -> None:
    """Two copies of the longest segment must fit; bad values -> KmshcError naming them."""
    if vocab < 2 or not 2 <= min_segment <= max_segment or 2 * max_segment > seq_len:
        raise KmshcError(f"toy induction layout: need vocab >= 2 and 2 <= min_segment <= max_segment <= seq_len / 2, "
                         f"got vocab={vocab}, min_segment={min_segment}, max_segment={max_segment}, seq_len={seq_len}")


def sample_induction(gen: torch.Generator, n: int, *, seq_len: int, vocab: int, min_segment: int,
                     max_segment: int) -> InductionBatch:
    """``n`` random sequences, each with one segment copied to a random later offset."""
    check_layout(seq_len=seq_len, vocab=vocab, min_segment=min_segment, max_segment=max_segment)
    tokens = torch.randint(vocab, (n, seq_len), generator=gen)
    length = torch.randint(min_segment, max_segment + 1, (n,), generator=gen)
    # src uniform in [0, T - 2m], then dst uniform in [src + m, T - m]: both offsets random.
    src = (torch.rand(n, generator=gen) * (seq_len - 2 * length + 1)).long()
    dst = src + length + (torch.rand(n, generator=gen) * (seq_len - src - 2 * length + 1)).long()
    pos = torch.arange(seq_len)
    rel = pos[None, :] - dst[:, None]
    copy = (rel >= 0) & (rel < length[:, None])
    source_pos = (src[:, None] + rel).clamp(0, seq_len - 1)
    tokens = torch.where(copy, tokens.gather(1, source_pos), tokens)
    return InductionBatch(tokens, src, dst, length)


def token_text(indices: list[int]) -> str:
    return " ".join(f"t{i}" for i in indices)


def toy_induction_task(seed: int = 0, n: int = 1000, vocab: int = VOCAB, seq_len: int = SEQ_LEN,
                       min_segment: int = MIN_SEGMENT, max_segment: int = MAX_SEGMENT) -> Task:
    """Minimal pairs from the toy's training distribution, cut inside the copy.

    Each sequence ends at a random predictable copied token: the good sentence ends with the
    correct copy, the bad one with another token of the same segment, so that "some token seen
    earlier" does not win, only "the token that followed this one earlier" does.
    """
    gen = torch.Generator().manual_seed(seed)
    batch = sample_induction(gen, n, seq_len=seq_len, vocab=vocab, min_segment=min_segment, max_segment=max_segment)
    rng = random.Random(seed)
    items = []
    for b in range(n):
        toks, src, dst, m = (batch.tokens[b].tolist(), int(batch.src[b]), int(batch.dst[b]), int(batch.length[b]))
        j = rng.randint(1, m - 1)
        answer = toks[dst + j]
        others = sorted(set(toks[src:src + m]) - {answer}) or sorted(set(range(vocab)) - {answer})
        prefix = toks[:dst + j]
        items.append(PairItem(token_text(prefix + [answer]), token_text(prefix + [rng.choice(others)])))
    return Task(name="toy_induction", kind="pairs", items=tuple(items),
                source=f"generated:toy_induction:vocab={vocab}:seq_len={seq_len}:seed={seed}")


