"""Pairs that differ in their final token alone are scored from one row each.

The fold must give the two-row margins exactly (up to float rounding) under the ablations for
which it is exact, and must not be used where it is not (resample, pairs differing earlier).
"""
from __future__ import annotations

import pytest
import torch

from kmshc.engine.ablation import folds_exactly, make_ablation
from kmshc.train.datamodule import batch_of
from kmshc.engine.encoding import encode, final_token_pairs, fold_final_tokens
from kmshc.engine.scoring import Scorer
from kmshc.tasks.base import PairItem, Task
from kmshc.engine.tiny import tiny_model

L, H = 3, 4
NAMES = ["Mary", "John", "Anna", "Paul", "Kate", "Mark"]


@pytest.fixture(scope="module")
def llama():
    return tiny_model("llama", n_layers=L, n_heads=H)


def one_token_words(tok) -> list[str]:
    """Words that the tiny tokenizer encodes as one token after a space, so that the pairs below
    differ in their final token alone."""
    words = [w for w in ("the", "a", "dog", "cat", "is", "are", "and", "of", "to", "in") + tuple(NAMES)
             if len(tok(" " + w, add_special_tokens=False)["input_ids"]) == 1]
    assert len(words) >= 3, words
    return words


def final_token_task(tok, n: int = 10) -> Task:
    w = one_token_words(tok)
    items = tuple(PairItem(f"When {w[i % 3]} went out, it gave {w[(i + 1) % 3]} to {a}",
                           f"When {w[i % 3]} went out, it gave {w[(i + 1) % 3]} to {b}")
                  for i, (a, b) in enumerate((w[i % len(w)], w[(i + 1) % len(w)]) for i in range(n)))
    return Task("final", "pairs", items)


def masks(m: int = 4, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(m, L, H, generator=g) > 0.4).float()


def test_final_token_pairs_detects_only_last_token_differences(llama):
    _, tok = llama
    data = encode(final_token_task(tok), tok)
    assert final_token_pairs(data.seqs)
    early = encode(Task("e", "pairs", (PairItem("the dog runs home", "the dogs runs home"),)), tok)
    assert not final_token_pairs(early.seqs)
    folded = fold_final_tokens(batch_of(data, torch.arange(3)))
    assert folded.input_ids.shape[0] == 3 and folded.candidates.shape == (3, 2)
    assert torch.equal(folded.candidates[0], torch.stack([data.seqs[0][-1], data.seqs[1][-1]]))


@pytest.mark.parametrize("ablation", ["zero", "mean"])
def test_folded_margins_equal_two_row_margins(llama, ablation):
    task = final_token_task(llama[1])
    kw = dict(ablation=ablation, train=task, batch_size=4, prefix_cache=False, max_rows=10**6)
    fast, plain = Scorer(*llama, task, **kw), Scorer(*llama, task, skip_shared_tokens=False, **kw)
    assert fast._fold and not plain._fold
    want, got = plain.outcomes(masks()), fast.outcomes(masks())
    torch.testing.assert_close(got.margin, want.margin, atol=2e-4, rtol=1e-4)
    assert fast.cost.example_forwards * 2 == plain.cost.example_forwards  # one row per pair, not two
    batch = batch_of(fast.data, torch.arange(4))
    torch.testing.assert_close(fast.batch_margins(batch, masks()), plain.batch_margins(batch, masks()),
                               atol=2e-4, rtol=1e-4)


def test_resample_and_early_differences_do_not_fold(llama):
    model, tok = llama
    task = final_token_task(tok)
    data = encode(task, tok)
    assert not folds_exactly(data, make_ablation("resample", model, data))
    early = encode(Task("e", "pairs", (PairItem("the dog runs home", "the dogs runs home"),)), tok)
    assert not folds_exactly(early, make_ablation("zero", model, None))
