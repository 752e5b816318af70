"""Speed levers must not change results: prefix caching, shared-token skipping, memory-sized chunks.

Every fast path is compared with the plain path (no cache, every token scored, one forward per
mask chunk of unlimited size) on tiny random models of every supported architecture.
"""
from __future__ import annotations

import pytest
import torch

from kmshc.engine import memory
from kmshc.engine.architectures import decoder_layers
from kmshc.engine.hooks import gated
from kmshc.engine.prefix import PrefixCache, first_differing_layer, hidden_entering, plan_splits, start_at_layer
from kmshc.engine.readout import final_hidden, first_differing_tokens, sequence_logprobs
from kmshc.engine.scoring import Scorer
from kmshc.tasks import grammar_task
from kmshc.engine.tiny import TINY_ARCHS, tiny_model

# Margins are sums of ~10 log-probs of size ~6, so fp32 rounding alone moves them by ~1e-5.
PLAIN = dict(prefix_cache=False, skip_shared_tokens=False, max_rows=10**6)
N_LAYERS, N_HEADS = 4, 4


@pytest.fixture(scope="module")
def task():
    return grammar_task(n=10, seed=3)


def upper_layer_masks(m: int, seed: int = 0) -> torch.Tensor:
    """``[m, 4, 4]``: a shared, non-trivial prefix (layer 0 head 1 off) and random layers 2–3."""
    g = torch.Generator().manual_seed(seed)
    masks = torch.ones(m, N_LAYERS, N_HEADS)
    masks[:, 0, 1] = 0
    masks[:, 2:] = (torch.rand(m, 2, N_HEADS, generator=g) > 0.5).float()
    return masks


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_fast_scorer_matches_plain_path_on_every_arch(arch, task):
    model, tok = tiny_model(arch, n_layers=N_LAYERS, n_heads=N_HEADS)
    masks = upper_layer_masks(5)
    plain = Scorer(model, tok, task, ablation="mean", train=task, batch_size=4, **PLAIN)
    fast = Scorer(model, tok, task, ablation="mean", train=task, batch_size=4, max_rows=12)
    want, got = plain.outcomes(masks), fast.outcomes(masks)
    torch.testing.assert_close(got.margin, want.margin, atol=3e-5, rtol=1e-5)
    assert torch.equal(got.correct, want.correct)
    # one prefix pass per batch, caching the stream entering each layer where a group starts
    starts = set(plan_splits(masks, fallback=0).starts.tolist())
    assert 2 in starts and len(fast.cache) == fast.cache.misses == 3 * len(starts)
    # A single mask later reuses the split layer (2) and the cached prefix of every batch.
    single = fast.outcomes(masks[2])
    assert fast.cache.hits == 3
    torch.testing.assert_close(single.margin, want.margin[2:3], atol=3e-5, rtol=1e-5)
    assert fast.evaluations == 6 and plain.evaluations == 5


def test_prefix_depends_on_the_prefix_mask(task):
    """Changing a gate below the split layer must give a new cache entry and new results."""
    model, tok = tiny_model("llama", n_layers=N_LAYERS, n_heads=N_HEADS)
    fast = Scorer(model, tok, task, ablation="zero", batch_size=8)
    plain = Scorer(model, tok, task, ablation="zero", batch_size=8, **PLAIN)
    a = upper_layer_masks(3)
    b = a.clone()
    b[:, 1, 3] = 0  # same upper layers, different shared prefix
    for masks in (a, b):
        torch.testing.assert_close(fast.outcomes(masks).margin, plain.outcomes(masks).margin, atol=3e-5, rtol=1e-5)
    layers = len(set(plan_splits(a, fallback=0).starts.tolist()))  # streams cached per batch and prefix
    assert fast.cache.hits == 0 and len(fast.cache) == 2 * 2 * layers  # 2 batches × 2 prefixes
    assert not torch.allclose(plain.outcomes(a).margin, plain.outcomes(b).margin)


def test_hidden_entering_matches_transformers_hidden_states():
    model, _ = tiny_model("gpt2", n_layers=N_LAYERS, n_heads=N_HEADS)
    ids = torch.randint(1, 200, (3, 7))
    att = torch.ones_like(ids)
    with torch.inference_mode():
        ref = model.base_model(input_ids=ids, attention_mask=att, output_hidden_states=True).hidden_states
        for layer in range(N_LAYERS):
            torch.testing.assert_close(hidden_entering(model, layer, ids, att), ref[layer])


def test_start_at_layer_restores_the_model_even_after_an_error():
    model, _ = tiny_model("llama", n_layers=N_LAYERS, n_heads=N_HEADS)
    ids = torch.randint(1, 200, (2, 6))
    att = torch.ones_like(ids)
    with torch.inference_mode():
        before = final_hidden(model, ids, att)
        prefix = hidden_entering(model, 2, ids, att)
        with pytest.raises(ValueError, match="does not fit"):
            with start_at_layer(model, 2, prefix[:, :3]):  # wrong length: the feed hook refuses it
                final_hidden(model, ids, att)
        assert all("forward" not in blk.__dict__ for blk in decoder_layers(model))
        assert all(not blk._forward_pre_hooks for blk in decoder_layers(model))
        assert torch.equal(final_hidden(model, ids, att), before)
        with start_at_layer(model, 2, prefix):  # the right prefix reproduces the full forward
            torch.testing.assert_close(final_hidden(model, ids.repeat(2, 1), att.repeat(2, 1)), before.repeat(2, 1, 1))


def test_first_differing_layer():
    masks = torch.ones(3, 5, 2)
    assert first_differing_layer(masks) == 5
    masks[:, 1] = 0  # identical across masks, though not all ones: still shared
    assert first_differing_layer(masks) == 5
    masks[2, 3, 1] = 0
    assert first_differing_layer(masks) == 3
    assert first_differing_layer(masks[:1]) == 5


def test_prefix_cache_is_bounded_and_lru():
    cache = PrefixCache(max_bytes=3 * 40)  # room for three 10-float tensors
    mask = torch.ones(2, 2)
    keys = [PrefixCache.key(("b", i), 1, mask) for i in range(4)]
    for i, k in enumerate(keys[:3]):
        cache.put(k, torch.full((10,), float(i)))
    assert cache.get(keys[0]) is not None  # touch 0, so 1 is now the oldest
    cache.put(keys[3], torch.zeros(10))
    assert cache.get(keys[1]) is None and cache.get(keys[0]) is not None
    assert len(cache) == 3 and cache.bytes == 120
    cache.put(("huge",), torch.zeros(100))  # bigger than the bound: not stored
    assert len(cache) == 3
    assert PrefixCache.key("b", 1, mask) != PrefixCache.key("b", 1, mask * 0.5)


def test_skipping_shared_tokens_keeps_margins_exact_but_not_sums(task):
    model, tok = tiny_model("gpt_neox", n_layers=2, n_heads=N_HEADS)
    s = Scorer(model, tok, task, ablation="zero")
    data = s.data
    from kmshc.engine.encoding import pad
    ids, att = pad(data.seqs, data.pad_id)
    start = first_differing_tokens(data.seqs)
    assert (start >= 1).all() and (start > 1).any()
    with torch.inference_mode():
        h = final_hidden(model, ids, att)
        full = sequence_logprobs(model, h, ids, att)
        part = sequence_logprobs(model, h, ids, att, chunk_tokens=5, start=start)
    torch.testing.assert_close(part[0::2] - part[1::2], full[0::2] - full[1::2], atol=3e-5, rtol=1e-5)
    assert (part > full + 1e-4).any()  # the shared prefix's (negative) log-probs were left out


def test_resample_ablation_scores_every_token_and_matches_plain(task):
    """Resample values differ between a pair's rows, so no token may be skipped there."""
    model, tok = tiny_model("qwen2", n_layers=N_LAYERS, n_heads=N_HEADS)
    fast = Scorer(model, tok, task, ablation="resample", batch_size=4)
    plain = Scorer(model, tok, task, ablation="resample", batch_size=4, **PLAIN)
    assert fast._start is None
    masks = upper_layer_masks(4, seed=1)
    torch.testing.assert_close(fast.outcomes(masks).margin, plain.outcomes(masks).margin, atol=3e-5, rtol=1e-5)


def test_all_ones_gates_are_bitwise_identical_and_still_carry_gradients():
    model, _ = tiny_model("llama", n_layers=2, n_heads=N_HEADS)
    ids = torch.randint(1, 200, (2, 5))
    att = torch.ones_like(ids)
    with torch.no_grad():
        ref = final_hidden(model, ids, att)
        with gated(model, torch.ones(2, N_HEADS)):
            assert torch.equal(final_hidden(model, ids, att), ref)
    gates = torch.ones(2, N_HEADS, requires_grad=True)
    with gated(model, gates):
        final_hidden(model, ids, att).sum().backward()
    assert gates.grad is not None and gates.grad.abs().sum() > 0


def test_rows_per_forward_follows_free_memory(monkeypatch):
    model, _ = tiny_model("gpt2", n_layers=2, n_heads=N_HEADS)
    monkeypatch.setattr(memory, "available_bytes", lambda device="cpu": 1 << 40)
    assert memory.rows_per_forward(model, 16, cap=777) == 777
    monkeypatch.setattr(memory, "available_bytes", lambda device="cpu": 1)
    assert memory.rows_per_forward(model, 16, floor=9) == 9
    monkeypatch.setattr(memory, "available_bytes", lambda device="cpu": 64 * memory.row_bytes(model, 16))
    assert memory.rows_per_forward(model, 16, fraction=0.5) == 32
    assert memory.logits_chunk_tokens(model) >= 64
    assert memory.available_bytes() > 0
