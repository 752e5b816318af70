"""Head gating (hooks.gated) and ablation values on tiny random models of every architecture."""
from __future__ import annotations

import pytest
import torch

from kmshc.engine.ablation import MeanAblation, ResampleAblation, make_ablation
from kmshc.engine.architectures import ARCHITECTURES, arch_spec, head_dim, head_shape, out_projections
from kmshc.train.datamodule import batch_of
from kmshc.engine.encoding import Encoded, encode, pad
from kmshc.engine.hooks import capture_head_outputs, gated
from kmshc.tasks import grammar_task
from kmshc.engine.tiny import TINY_ARCHS, tiny_model
from kmshc.types import KmshcError

NO_SDPA = {"gemma2"}  # transformers refuses sdpa for Gemma2
CASES = [(a, attn) for a in TINY_ARCHS for attn in ("eager", "sdpa") if not (attn == "sdpa" and a in NO_SDPA)]


def _ids(b: int = 3, t: int = 7, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, 500, (b, t), generator=g)


@torch.no_grad()
def _logits(model, ids, att=None):
    return model(input_ids=ids, attention_mask=att).logits


@pytest.mark.parametrize("arch,attn", CASES)
def test_all_ones_reproduce_unhooked_logits(arch, attn):
    model, _ = tiny_model(arch, attn=attn)
    assert model.config._attn_implementation == attn
    ids = _ids()
    ref = _logits(model, ids)
    L, H = head_shape(model)
    with gated(model, torch.ones(L, H)):
        out = _logits(model, ids)
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=0)
    # With non-zero ablation values too: lerp is exact at g = 1.
    vals = [torch.randn(H, head_dim(model)) for _ in range(L)]
    with gated(model, torch.ones(3, L, H), vals):
        out = _logits(model, ids)
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=0)


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_zero_gate_equals_zeroing_out_projection_slice(arch):
    model, _ = tiny_model(arch)
    L, H = head_shape(model)
    d = head_dim(model)
    ids = _ids()
    layer, head = 1, 2
    gates = torch.ones(L, H)
    gates[layer, head] = 0
    with gated(model, gates):
        hooked = _logits(model, ids)

    proj = out_projections(model)[layer]
    saved = proj.weight.detach().clone()
    with torch.no_grad():  # by hand: Linear stores [out, in] (columns), GPT-2 Conv1D [in, out] (rows)
        if ARCHITECTURES[model.config.model_type].transposed:
            proj.weight[head * d:(head + 1) * d, :] = 0
        else:
            proj.weight[:, head * d:(head + 1) * d] = 0
    try:
        by_hand = _logits(model, ids)
    finally:
        with torch.no_grad():
            proj.weight.copy_(saved)
    torch.testing.assert_close(hooked, by_hand, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(hooked, _logits(model, ids), atol=1e-6)  # the gate did something


def test_transposed_flag_matches_weight_layout(tiny_gpt2, tiny_llama):
    for model, transposed in ((tiny_gpt2[0], True), (tiny_llama[0], False)):
        assert arch_spec(model).transposed is transposed
        assert head_dim(model) == model.config.hidden_size // model.config.num_attention_heads


@pytest.mark.parametrize("arch", ["gpt2", "llama", "gpt_neox"])
@pytest.mark.parametrize("with_values", [False, True])
def test_batched_masks_equal_sequential(arch, with_values):
    model, _ = tiny_model(arch)
    L, H = head_shape(model)
    b = 4
    ids = _ids(b, 6, seed=1)
    masks = (torch.rand(b, L, H, generator=torch.Generator().manual_seed(2)) > 0.5).float()
    masks[0] = 1  # one unablated row, one fully ablated row
    masks[1] = 0
    vals = [torch.randn(H, head_dim(model)) for _ in range(L)] if with_values else None
    with gated(model, masks, vals):
        batched = _logits(model, ids)
    for i in range(b):
        with gated(model, masks[i], vals):
            single = _logits(model, ids[i:i + 1])
        torch.testing.assert_close(batched[i:i + 1], single, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(batched[0], batched[1], atol=1e-4)


def test_gate_shape_and_batch_mismatch_are_rejected(tiny_llama):
    model, _ = tiny_llama
    with pytest.raises(ValueError, match="shape"):
        with gated(model, torch.ones(3, 4, 4)):
            pass
    with pytest.raises(ValueError, match="rows"):
        with gated(model, torch.ones(5, 2, 4)):
            _logits(model, _ids(3))


def test_hooks_removed_after_exception(tiny_gpt2):
    model, _ = tiny_gpt2
    ids = _ids()
    ref = _logits(model, ids)
    projs = out_projections(model)
    with pytest.raises(RuntimeError, match="boom"):
        with gated(model, torch.zeros(*head_shape(model))):
            assert all(len(p._forward_pre_hooks) == 1 for p in projs)
            raise RuntimeError("boom")
    assert all(len(p._forward_pre_hooks) == 0 for p in projs)
    with pytest.raises(RuntimeError, match="boom"):
        with capture_head_outputs(model, []):
            raise RuntimeError("boom")
    assert all(len(p._forward_pre_hooks) == 0 for p in projs)
    torch.testing.assert_close(_logits(model, ids), ref, atol=0, rtol=0)


def test_unsupported_architecture_lists_supported():
    from transformers import BertConfig, BertLMHeadModel
    model = BertLMHeadModel(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1,
                                       num_attention_heads=2, intermediate_size=32, is_decoder=True))
    with pytest.raises(KmshcError) as e:
        head_shape(model)
    msg = str(e.value)
    assert "'bert'" in msg and all(a in msg for a in ("llama", "gpt2", "gpt_neox", "qwen2", "mistral"))


# ----------------------------------------------------------------------- ablation values
def _split(tok, n=12, seed=0):
    return encode(grammar_task(seed=seed, n=n), tok)


def _per_sequence_outputs(model, seq):
    """Head outputs of one unpadded sequence: per layer ``[T, H, d]``."""
    store: list = []
    with torch.no_grad(), capture_head_outputs(model, store):
        model(input_ids=seq[None])
    return [z[0] for z in store[0]]


@pytest.mark.parametrize("arch", ["gpt2", "llama", "gpt_neox"])
def test_mean_ablation_matches_hand_means(arch):
    model, tok = tiny_model(arch)
    data = _split(tok)
    outs = [_per_sequence_outputs(model, s) for s in data.seqs]  # one list of [T, H, d] per sequence
    L, _ = head_shape(model)
    overall = MeanAblation.fit(model, data, per_position=False, batch_size=5)
    per_pos = MeanAblation.fit(model, data, per_position=True, batch_size=5)
    t_max = max(len(s) for s in data.seqs)
    for layer in range(L):
        allpos = torch.cat([o[layer] for o in outs])  # [sum T, H, d]
        torch.testing.assert_close(overall.means[layer], allpos.mean(0), atol=1e-5, rtol=1e-5)
        assert per_pos.means[layer].shape[0] == t_max
        for t in (0, 1, t_max - 1):
            at_t = torch.stack([o[layer][t] for o in outs if o[layer].shape[0] > t])
            torch.testing.assert_close(per_pos.means[layer][t], at_t.mean(0), atol=1e-5, rtol=1e-5)
    # Positions past the fitted length fall back to the all-position mean.
    batch = next(iter(data.batches(2)))
    long_ids, long_att = pad([torch.arange(1, t_max + 4)], data.pad_id)
    batch.input_ids, batch.attention_mask = long_ids, long_att
    vals = per_pos.values(batch)
    torch.testing.assert_close(vals[0][-1], per_pos.overall[0], atol=0, rtol=0)


def test_zero_gate_replaces_head_by_its_mean(tiny_llama):
    model, tok = tiny_llama
    data = _split(tok)
    abl = make_ablation("mean", model, data)
    gates = torch.ones(*head_shape(model))
    gates[0, 1] = 0
    batch = next(iter(data.batches(4)))
    store: list = []
    # capture registers after gated, so it sees what the projection receives.
    with torch.no_grad(), gated(model, gates, abl.values(batch)), capture_head_outputs(model, store):
        model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
    z = store[0][0]  # layer 0: [R, T, H, d]
    assert torch.equal(z[:, :, 1], abl.means[0][1].expand_as(z[:, :, 1]))
    plain = _per_sequence_outputs(model, data.seqs[int(batch.rows[0])])[0]
    torch.testing.assert_close(z[0, :plain.shape[0], 0], plain[:, 0], atol=1e-5, rtol=1e-5)


def test_resample_ablation_is_partner_output(tiny_gpt2):
    model, tok = tiny_gpt2
    data = _split(tok, n=10)
    abl = ResampleAblation(model, seed=3)
    partners = abl.partners(data)
    assert sorted(partners) == list(range(data.n)) and all(i != p for i, p in enumerate(partners))
    assert ResampleAblation(model, seed=3).partners(data) == partners  # seeded
    batch = next(iter(data.batches(3)))
    vals = abl.values(batch)
    T = batch.input_ids.shape[1]
    for j, row in enumerate(batch.rows.tolist()):
        ex, role = divmod(row, data.rows_per_example)  # good/bad sentence keeps its role
        partner_seq = data.seqs[partners[ex] * data.rows_per_example + role]
        ref = _per_sequence_outputs(model, partner_seq)
        k = min(T, len(partner_seq))
        for layer in range(len(vals)):
            torch.testing.assert_close(vals[layer][j, :k], ref[layer][:k], atol=1e-5, rtol=1e-5)
    assert all(v.shape[0] == 2 * batch.rows.shape[0] for v in abl.values(batch, n_masks=2))
    with pytest.raises(KmshcError, match="two examples"):
        ResampleAblation(model).partners(_split(tok, n=1))


def test_resample_cache_is_bounded_in_bytes(tiny_gpt2):
    """The cache holds rows, each at its split's width, and never more bytes than its bound."""
    model, tok = tiny_gpt2
    data = _split(tok, n=12)
    probe = ResampleAblation(model)
    probe.values(batch_of(data, torch.tensor([0])))  # one pair: two rows
    per_row = probe.cache.bytes // 2
    abl = ResampleAblation(model, cache_bytes=3 * per_row)
    for step in range(8):  # eight different row sets, as shuffled training batches give
        abl.values(batch_of(data, torch.tensor([step, (step + 1) % 12])))
    assert len(abl.cache) == 3 and abl.cache.bytes == 3 * per_row
    batch = batch_of(data, torch.tensor([0, 1]))  # evicted long ago: recomputed, same values
    for got, ref in zip(abl.values(batch), ResampleAblation(model).values(batch)):
        torch.testing.assert_close(got, ref)


def test_patch_values_are_computed_once_per_row_however_the_batches_are_drawn(tiny_gpt2):
    """Training draws a new batch every step from the same rows: each row's values run once,
    and a row's values are the same in every batch it appears in."""
    model, tok = tiny_gpt2
    data = _split(tok, n=6)
    abl = ResampleAblation(model)
    ran: list[int] = []
    hook = model.base_model.register_forward_pre_hook(lambda mod, args, kw: ran.append(kw["input_ids"].shape[0]),
                                                      with_kwargs=True)
    try:
        first = abl.values(batch_of(data, torch.tensor([0, 1, 2])))
        again = abl.values(batch_of(data, torch.tensor([2, 5, 0])))
        abl.values(batch_of(data, torch.tensor([5, 1])))
    finally:
        hook.remove()
    assert ran == [6, 2]  # the pairs of examples 0, 1, 2, then example 5's; the third batch runs nothing
    T = min(first[0].shape[1], again[0].shape[1])
    for a, b in zip(first, again):  # rows: first 0-5 (examples 0, 1, 2), again 4, 5, 10, 11, 0, 1
        torch.testing.assert_close(a[0, :T], b[4, :T])  # row 0
        torch.testing.assert_close(a[4, :T], b[0, :T])  # row 4


def test_resample_cache_never_serves_a_dead_split_to_a_new_one(tiny_gpt2):
    """CPython reuses a freed object's address, so a cache keyed by ``id(data)`` handed the values
    of a garbage-collected split to a new split allocated at the same address."""
    model, tok = tiny_gpt2
    abl = ResampleAblation(model, seed=1)
    old, other = _split(tok, n=6, seed=0), _split(tok, n=6, seed=5)
    abl.values(batch_of(old, torch.arange(3)))
    address, kind, pad_id = id(old), old.kind, old.pad_id
    del old
    alive = []
    for _ in range(2000):  # allocate splits until one lands where the dead one was
        new = Encoded(kind, other.seqs, other.n, pad_id)
        if id(new) == address:
            break
        alive.append(new)
    else:
        pytest.skip("this interpreter did not reuse the address; nothing to collide with")
    batch = batch_of(new, torch.arange(3))
    for got, ref in zip(abl.values(batch), ResampleAblation(model, seed=1).values(batch)):
        torch.testing.assert_close(got, ref)


def test_make_ablation_rejects_unknown_and_missing_train(tiny_gpt2):
    model, _ = tiny_gpt2
    with pytest.raises(KmshcError, match="zero, mean, resample"):
        make_ablation("shuffle", model, None)
    with pytest.raises(KmshcError, match="training split"):
        make_ablation("mean", model, None)
