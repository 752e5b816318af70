"""Head diagnostics: the pure scores on hand-made patterns, and the model path with a forced head."""
from __future__ import annotations

import sys

import pytest
import torch

from kmshc.engine.diagnostics import (attention_at, attention_patterns, current_token_scores, duplicate_token_scores,
                               eager_attention, final_position_scores, head_diagnostics, induction_scores,
                               previous_token_scores, repeated_random_tokens)
from kmshc.engine.tiny import tiny_model

PERIOD, B = 5, 3
T = 1 + 2 * PERIOD


def _uniform_causal(L: int, H: int) -> torch.Tensor:
    """``[L, B, H, T, T]``: every query attends uniformly to itself and all earlier positions."""
    tri = torch.tril(torch.ones(T, T))
    return (tri / tri.sum(-1, keepdim=True)).expand(L, B, H, T, T).clone()


def _force(patterns: torch.Tensor, layer: int, head: int, key_of) -> None:
    """Make (layer, head) attend from every query q >= 1 only to ``key_of(q)`` (one-hot rows)."""
    patterns[layer, :, head] = 0
    patterns[layer, :, head, 0, 0] = 1
    for q in range(1, T):
        patterns[layer, :, head, q, key_of(q)] = 1


def test_forced_heads_score_one_and_others_their_uniform_share():
    p = _uniform_causal(2, 4)
    _force(p, 0, 1, lambda q: q - 1)                                   # previous-token head
    _force(p, 1, 2, lambda q: q - PERIOD + 1 if q > PERIOD else q)  # induction head
    _force(p, 1, 3, lambda q: q - PERIOD if q > PERIOD else q)          # duplicate-token head
    prev, ind, dup = (f(p, period=PERIOD) for f in (previous_token_scores, induction_scores, duplicate_token_scores))
    assert prev[0, 1] == 1 and ind[1, 2] == 1 and dup[1, 3] == 1
    # A uniform head gives 1/(q+1) to each key: the mean of that over the scored queries.
    uni_prev = torch.tensor([1 / (q + 1) for q in range(2, 1 + PERIOD)]).mean()
    uni_rep = torch.tensor([1 / (q + 1) for q in range(1 + PERIOD, T)]).mean()
    torch.testing.assert_close(prev[0, 0], uni_prev)
    torch.testing.assert_close(ind[0, 0], uni_rep)
    # Each forced head scores 0 on the diagnostics it does not implement.
    assert ind[0, 1] == 0 and dup[0, 1] == 0 and prev[1, 2] == 0 and prev[1, 3] == 0 and ind[1, 3] == 0
    cur = current_token_scores(p, period=PERIOD)
    assert cur[1, 2] == 1 and cur[1, 3] == 1 and cur[0, 1] == 0  # the two forced heads attend to self in r


def test_attention_at_averages_only_valid_observations():
    p = torch.zeros(1, 2, 1, 4, 4)
    p[0, 0, 0, 3, 1], p[0, 1, 0, 3, 2] = 0.8, 0.2
    q, k = torch.tensor([[3], [3]]), torch.tensor([[1], [2]])
    assert attention_at(p, q, k)[0, 0] == pytest.approx(0.5)
    assert attention_at(p, q, k, valid=torch.tensor([[True], [False]]))[0, 0] == pytest.approx(0.8)
    with pytest.raises(ValueError):
        attention_at(p, q, k, valid=torch.zeros(2, 1, dtype=torch.bool))


def test_final_position_scores_use_each_rows_last_real_token():
    p = torch.zeros(1, 2, 1, 4, 4)
    p[0, 0, 0, 3, 1] = 0.9   # row 0: 4 real tokens, target 1
    p[0, 1, 0, 2, 0] = 0.3   # row 1: 3 real tokens (one pad), target 0
    p[0, 1, 0, 3, 0] = 1.0   # the pad position: must be ignored
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
    assert final_position_scores(p, mask, torch.tensor([1, 0]))[0, 0] == pytest.approx(0.6)
    with pytest.raises(ValueError):
        final_position_scores(p, mask, torch.tensor([1, 3]))


def test_repeated_random_tokens_layout_and_seed():
    ids = repeated_random_tokens(range(10, 30), n_seq=4, period=PERIOD, start_id=0, seed=1)
    assert ids.shape == (4, T) and (ids[:, 0] == 0).all()
    assert torch.equal(ids[:, 1:1 + PERIOD], ids[:, 1 + PERIOD:])
    assert all(len(set(r.tolist())) == PERIOD for r in ids[:, 1:1 + PERIOD])  # no repeats inside r
    assert torch.equal(ids, repeated_random_tokens(range(10, 30), n_seq=4, period=PERIOD, start_id=0, seed=1))
    assert not torch.equal(ids, repeated_random_tokens(range(10, 30), n_seq=4, period=PERIOD, start_id=0, seed=2))


def _forcing(original, layer: int, head: int, period: int):
    """Wrap a modeling file's ``eager_attention_forward`` so that (layer, head) is an induction head."""
    def forced(module, query, key, value, attention_mask, *args, **kwargs):
        out, weights = original(module, query, key, value, attention_mask, *args, **kwargs)
        if module.layer_idx == layer:
            t = weights.shape[-1]
            w = torch.zeros(t, t, dtype=weights.dtype)
            for q in range(t):
                w[q, q - period + 1 if q > period else q] = 1
            weights = weights.clone()
            weights[:, head] = w
        return out, weights
    return forced


@pytest.mark.parametrize("arch", ["gpt2", "llama", "qwen3"])  # llama, qwen3: grouped-query attention
def test_model_path_finds_a_forced_head_and_restores_sdpa(arch, monkeypatch):
    model, tok = tiny_model(arch, attn="sdpa")
    modeling = sys.modules[type(model).__module__]
    monkeypatch.setattr(modeling, "eager_attention_forward",
                        _forcing(modeling.eager_attention_forward, layer=1, head=3, period=6))
    diag = head_diagnostics(model, tok, n_seq=4, period=6)
    assert diag.induction.shape == (2, 4)
    assert diag.induction[1, 3] == pytest.approx(1.0)
    assert diag.induction.flatten().argmax() == 1 * 4 + 3
    assert model.config._attn_implementation == "sdpa"  # restored after the eager pass


def test_eager_attention_restores_the_implementation_after_an_error():
    model, _ = tiny_model("llama", attn="sdpa")
    with pytest.raises(RuntimeError), eager_attention(model):
        assert model.config._attn_implementation == "eager"
        raise RuntimeError("boom")
    assert model.config._attn_implementation == "sdpa"


def test_patterns_are_causal_distributions_per_query_head():
    model, tok = tiny_model("mistral", attn="sdpa")  # GQA: 4 query heads share 2 KV heads
    ids = torch.randint(2, 200, (3, 7))
    p = attention_patterns(model, ids, batch_size=2)
    assert p.shape == (2, 3, 4, 7, 7)
    torch.testing.assert_close(p.sum(-1), torch.ones(2, 3, 4, 7))
    assert p.triu(1).abs().max() == 0
