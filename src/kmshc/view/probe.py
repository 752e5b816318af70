"""Section 5 data: what each head does, from two batched forwards of the full (unablated) model.

* diagnostics (:mod:`kmshc.engine.diagnostics`): previous-token, duplicate-token and induction scores on
  ``n_seq`` repeated random sequences (one forward);
* on the first ``n_items`` test items (one forward, eager attention, hooks at each out-projection
  and the final norm): attention from the read position to the answer's earlier occurrence
  (``answer``), each head's **direct effect** on the margin, and the attention patterns of the
  circuit heads on the first ``n_examples`` items.

The direct effect of head ``h`` is ``Δ(norm(x)) − Δ(norm(x − c_h))``: ``x`` the residual stream
entering the final norm at the read position, ``c_h`` the head's write into it (its slice of the
out-projection), ``Δ`` the unembedding's logit difference between the good and the bad next
token. It removes the head's direct path only (later layers still see it), the usual direct
logit attribution, with the final norm recomputed instead of frozen.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Optional, Sequence

import torch
from torch import nn

from kmshc.engine.architectures import _get, arch_spec, out_projections

# where each supported architecture keeps its final norm (None found: no direct effects)
FINAL_NORMS = ("model.norm", "transformer.ln_f", "gpt_neox.final_layer_norm", "model.decoder.final_layer_norm",
               "model.final_layernorm")
MAX_PATTERN_HEADS = 24  # patterns for at most this many circuit heads: bounds the page's size


@dataclass(frozen=True)
class Example:
    """One test item: its ``tokens``, the ``query`` position the model reads, the ``answer`` token,
    and per circuit head its attention pattern (``[T, T]`` rows = query positions, 3 decimals)."""

    tokens: tuple[str, ...]
    query: int
    answer: str
    patterns: tuple[tuple[str, tuple[tuple[float, ...], ...]], ...]


@dataclass(frozen=True)
class HeadProbe:
    """``scores``: named ``[L, H]`` tables (``None`` where a score does not apply to the task)."""

    scores: dict[str, Optional[list[list[float]]]]
    examples: tuple[Example, ...]
    n_items: int


def final_norm(model: nn.Module) -> Optional[nn.Module]:
    for path in FINAL_NORMS:
        try:
            return _get(model, path)
        except AttributeError:
            continue
    return None


def read_positions(enc, n: int) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The first ``n`` items of an encoded split as ``(seqs, query [n], key [n], valid [n], tokens [n, 2])``:
    the sequence the model reads, where it reads, the answer's earlier occurrence (``valid``: there is
    one) and the good and bad next tokens."""
    from kmshc.engine.diagnostics import answer_positions
    if enc.kind == "pairs":
        good, bad = enc.seqs[0:2 * n:2], enc.seqs[1:2 * n:2]
        query, key, valid = answer_positions(good, bad)
        pick = [(g[min(q + 1, len(g) - 1)], b[min(q + 1, len(b) - 1)]) for g, b, q in zip(good, bad, query.tolist())]
        return list(good), query, key, valid, torch.tensor(pick)
    seqs = list(enc.seqs[:n])
    query = torch.tensor([len(s) - 1 for s in seqs])
    gold = enc.gold[:n]
    other = (gold + 1) % len(enc.label_ids)  # any wrong label: the margin is against the best one, this is a proxy
    return seqs, query, torch.zeros_like(query), torch.zeros(len(seqs), dtype=torch.bool), \
        torch.stack([enc.label_ids[gold], enc.label_ids[other]], 1)


@contextmanager
def _norm_input(norm: Optional[nn.Module], store: list) -> Iterator[None]:
    handle = norm.register_forward_pre_hook(lambda m, a: store.append(a[0].detach())) if norm is not None else None
    try:
        yield
    finally:
        if handle is not None:
            handle.remove()


def head_writes(model: nn.Module, z: list[torch.Tensor]) -> torch.Tensor:
    """``[L, H, B, D]``: each head's write into the residual stream, from its out-projection input
    ``z[l]`` ``[B, H, d]`` (bias left out: it belongs to no head)."""
    transposed = arch_spec(model).transposed
    out = []
    for proj, zl in zip(out_projections(model), z):
        _, n_heads, d = zl.shape
        w = proj.weight.detach().float()
        if transposed:  # Conv1D: [in, out]
            out.append(torch.einsum("bhd,hdD->hbD", zl.float(), w.view(n_heads, d, -1)))
        else:
            out.append(torch.einsum("bhd,Dhd->hbD", zl.float(), w.view(-1, n_heads, d)))
    return torch.stack(out)


def direct_effects(model: nn.Module, norm: nn.Module, x: torch.Tensor, writes: torch.Tensor,
                   tokens: torch.Tensor) -> torch.Tensor:
    """``[L, H]`` mean over items of ``Δ(norm(x)) − Δ(norm(x − c_h))`` (module doc).

    ``x`` ``[B, D]`` final-norm inputs at the read positions; ``writes`` ``[L, H, B, D]``;
    ``tokens`` ``[B, 2]`` good and bad next token ids.
    """
    unembed = model.get_output_embeddings().weight.detach().float()
    u = unembed[tokens[:, 0]] - unembed[tokens[:, 1]]  # [B, D]
    with torch.no_grad():
        full = (norm(x.to(norm.weight.dtype)).float() * u).sum(-1)  # [B]
        without = (norm((x[None, None] - writes).to(norm.weight.dtype)).float() * u).sum(-1)  # [L, H, B]
    return (full - without).mean(-1)


def _forward(model: nn.Module, seqs: Sequence[torch.Tensor], pad_id: int, query: torch.Tensor):
    """One forward: ``patterns`` ``[L, B, H, T, T]``, out-projection inputs at ``query`` (``[B, H, d]``
    per layer) and the final-norm input there (``[B, D]`` or ``None``)."""
    from kmshc.engine.diagnostics import attention_patterns
    from kmshc.engine.encoding import pad
    from kmshc.engine.hooks import capture_head_outputs
    ids, mask = pad(list(seqs), pad_id)
    store: list = []
    norm_in: list = []
    norm = final_norm(model)
    with capture_head_outputs(model, store), _norm_input(norm, norm_in):
        patterns = attention_patterns(model, ids, mask, batch_size=len(ids))
    rows = torch.arange(len(ids))
    z = [zl[rows, query].cpu() for zl in store[0]]
    x = norm_in[0][rows, query].cpu() if norm_in else None
    return patterns, z, x, norm


def _examples(tok, seqs, query, tokens, patterns, heads: Sequence[str], n: int) -> tuple[Example, ...]:
    out = []
    for i in range(min(n, len(seqs))):
        t = len(seqs[i])
        pats = []
        for name in heads[:MAX_PATTERN_HEADS]:
            layer, head = (int(p) for p in name[1:].split("H"))
            p = patterns[layer, i, head, :t, :t]
            pats.append((name, tuple(tuple(round(float(v), 3) for v in row) for row in p)))
        out.append(Example(tuple(tok.decode([int(x)]) for x in seqs[i]), int(query[i]),
                           tok.decode([int(tokens[i, 0])]), tuple(pats)))
    return tuple(out)


def probe_heads(model: nn.Module, tok, task, heads: Sequence[str], *, n_items: int = 12, n_examples: int = 3,
                n_seq: int = 8, min_share: float = 0.9) -> HeadProbe:
    """Section 5 for ``heads`` (the circuit, most important first) on ``task`` (the test split)."""
    from kmshc.engine.diagnostics import attention_at, head_diagnostics
    from kmshc.engine.encoding import encode
    diag = head_diagnostics(model, tok, n_seq=n_seq)
    enc = encode(task, tok)
    seqs, query, key, valid, tokens = read_positions(enc, min(n_items, enc.n))
    patterns, z, x, norm = _forward(model, seqs, enc.pad_id, query)
    answer = (attention_at(patterns, query[valid][:, None], key[valid][:, None])
              if float(valid.double().mean()) >= min_share else None)  # else the answer repeats by chance
    effect = direct_effects(model, norm, x, head_writes(model, z), tokens) if norm is not None else None
    scores = {"previous_token": diag.previous_token, "duplicate_token": diag.duplicate_token,
              "induction": diag.induction, "answer": answer, "direct_effect": effect}
    rounded = {k: None if v is None else [[round(float(a), 4) for a in row] for row in v] for k, v in scores.items()}
    return HeadProbe(rounded, _examples(tok, seqs, query, tokens, patterns, heads, n_examples), len(seqs))
