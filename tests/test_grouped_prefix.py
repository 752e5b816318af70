"""Masks grouped by the prefix they share with a reference mask give the plain path's results, and run fewer rows.

A circuit ``C`` and its removals ``C∖{h}`` (the certificate's stack) differ at many layers, so
the whole stack shares no prefix; each ``C∖{h}`` still shares every layer below ``h``'s with ``C``.
"""
from __future__ import annotations

import pytest
import torch

from kmshc.engine.encoding import final_token_pairs
from kmshc.engine.prefix import plan_splits, streams_entering, unique_masks
from kmshc.engine.scoring import Scorer
from kmshc.tasks import grammar_task
from kmshc.tasks.base import PairItem, Task
from kmshc.engine.tiny import tiny_model

L, H = 4, 4
PLAIN = dict(prefix_cache=False, skip_shared_tokens=False, max_rows=10**6)
CIRCUIT = ((0, 1), (1, 2), (2, 0), (3, 3), (3, 1))  # (layer, head)


@pytest.fixture(scope="module")
def llama():
    return tiny_model("llama", n_layers=L, n_heads=H)


def mask_of(heads, shape: tuple[int, int] = (L, H)) -> torch.Tensor:
    m = torch.zeros(shape)
    for layer, head in heads:
        m[layer, head] = 1
    return m


def certificate_stack() -> torch.Tensor:
    """``[6, L, H]``: the circuit, then the circuit without each of its heads."""
    return torch.stack([mask_of(CIRCUIT)] + [mask_of(set(CIRCUIT) - {h}) for h in CIRCUIT])


def random_stack(m: int = 6, seed: int = 0) -> torch.Tensor:
    """Random masks, with copies of the first one's lower layers so that groups form."""
    g = torch.Generator().manual_seed(seed)
    masks = (torch.rand(m, L, H, generator=g) > 0.4).float()
    masks[1:3, :2] = masks[0, :2]
    masks[3, :3] = masks[0, :3]
    return masks


def counterfactual_final_token_task(tok, n: int = 8) -> Task:
    """Pairs that differ in their final token alone, with counterfactuals of equal length that do too."""
    words = [w for w in ("the", "a", "dog", "cat", "is", "and", "of", "to", "Mary", "John")
             if len(tok(" " + w, add_special_tokens=False)["input_ids"]) == 1]
    assert len(words) >= 4, words

    def pair(first: str, i: int) -> tuple[str, str]:
        stem = f"When {first} went out, it gave {words[(i + 1) % 3]} to"
        return f"{stem} {words[i % len(words)]}", f"{stem} {words[(i + 1) % len(words)]}"

    return Task("final_cf", "pairs", tuple(PairItem(*pair(words[i % 3], i), counterfactual=pair(words[3], i))
                                           for i in range(n)))


def tasks(tok) -> dict[str, Task]:
    return {"grammar": grammar_task(n=10, seed=3), "final_token": counterfactual_final_token_task(tok)}


@pytest.mark.parametrize("ablation", ["zero", "mean", "counterfactual"])
@pytest.mark.parametrize("task_name", ["grammar", "final_token"])
@pytest.mark.parametrize("stack", ["certificate", "random"])
def test_grouped_scorer_matches_the_plain_path(llama, ablation, task_name, stack):
    task = tasks(llama[1])[task_name]
    if ablation == "counterfactual" and not task.has_counterfactuals:
        pytest.skip("the grammar task has no counterfactuals")
    masks = certificate_stack() if stack == "certificate" else random_stack()
    kw = dict(ablation=ablation, train=task, batch_size=4)
    fast = Scorer(*llama, task, max_rows=12, **kw)  # groups split into several forwards
    plain = Scorer(*llama, task, **kw, **PLAIN)
    if task_name == "final_token":
        assert final_token_pairs(fast.data.seqs) and fast._fold
    want, got = plain.outcomes(masks), fast.outcomes(masks)
    torch.testing.assert_close(got.margin, want.margin, atol=2e-4, rtol=1e-4)
    assert torch.equal(got.correct, want.correct)
    assert fast.cost.seq_layer_rows < plain.cost.seq_layer_rows
    again = fast.outcomes(masks.flip(0))  # another order, every stream now cached
    torch.testing.assert_close(again.margin, want.margin.flip(0), atol=2e-4, rtol=1e-4)


def test_certificate_stack_runs_fewer_layer_rows(llama):
    """C is the reference; C∖{L0H1} starts at 0, C∖{L1H2} at 1, C∖{L2H0} at 2, the two
    removals in layer 3 and C itself at 3, after one prefix pass through layers 0–2."""
    task = grammar_task(n=10, seed=3)
    fast = Scorer(*llama, task, ablation="zero", batch_size=4)
    plain = Scorer(*llama, task, ablation="zero", batch_size=4, **PLAIN)
    masks = certificate_stack()
    fast.outcomes(masks)
    plain.outcomes(masks)
    rows = len(fast.data.seqs)
    assert plain.cost.seq_layer_rows == rows * 6 * L
    assert fast.cost.seq_layer_rows == rows * (3 + (1 + 4 + 3 + 2 + 1 + 1))  # 15 per row, not 24
    assert fast.cost.seq_rows == plain.cost.seq_rows == rows * 6  # every mask's rows reach the last layer
    fast.outcomes(masks)  # the reference's streams now come from the cache: no prefix pass
    assert fast.cost.seq_layer_rows == rows * (15 + 12)


def test_identical_masks_run_once(llama):
    task = grammar_task(n=10, seed=3)
    fast = Scorer(*llama, task, ablation="zero", batch_size=4)
    plain = Scorer(*llama, task, ablation="zero", batch_size=4, **PLAIN)
    masks = random_stack()[:1].repeat(3, 1, 1)
    want = plain.outcomes(masks)
    got = fast.outcomes(masks)
    torch.testing.assert_close(got.margin, want.margin, atol=3e-5, rtol=1e-5)
    assert fast.cost.seq_layer_rows == len(fast.data.seqs) * L and fast.evaluations == 3


def test_plan_picks_the_reference_that_saves_most():
    """Paper-semantics restores ``(M∖S) ∪ {h}``: the first mask shares nothing, the others layer 0."""
    everything = {(layer, head) for layer in range(3) for head in range(2)}
    S = [(0, 0), (1, 0), (2, 0)]
    masks = torch.stack([mask_of(everything - set(S) | {h}, (3, 2)) for h in S])
    plan = plan_splits(masks, fallback=2)
    assert plan.reference == 1 and plan.starts.tolist() == [0, 1, 1] and plan.first == 0
    single = plan_splits(masks[:1], fallback=2)
    assert single.reference == 0 and single.starts.tolist() == [2] and single.first == 3


def test_unique_masks_keeps_call_order():
    a, b, c = torch.zeros(2, 2), torch.ones(2, 2), torch.eye(2)
    keep, index = unique_masks(torch.stack([b, a, b, c, a]))
    assert keep.tolist() == [0, 1, 3] and index.tolist() == [0, 1, 0, 2, 1]


def test_streams_entering_captures_several_layers_in_one_pass(llama):
    model, _ = llama
    ids = torch.randint(1, 200, (3, 7))
    att = torch.ones_like(ids)
    calls = []
    handle = model.base_model.register_forward_pre_hook(lambda *a: calls.append(1))
    try:
        with torch.inference_mode():
            ref = model.base_model(input_ids=ids, attention_mask=att, output_hidden_states=True).hidden_states
            calls.clear()
            got = streams_entering(model, [3, 1, 2], ids, att)
    finally:
        handle.remove()
    assert sorted(got) == [1, 2, 3] and len(calls) == 1
    for layer, hidden in got.items():
        torch.testing.assert_close(hidden, ref[layer])
