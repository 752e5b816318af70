"""The ``counterfactual`` ablation: each head is patched from its own example's counterfactual run.

Tiny random models; the items are IOI pairs whose names are single tokens of the tiny
tokenizer, so every counterfactual aligns with its clean sentence.
"""
from __future__ import annotations

import pytest
import torch

from kmshc.engine.ablation import CounterfactualAblation, make_ablation
from kmshc.engine.encoding import encode
from kmshc.experiment import Experiment
from kmshc.engine.hooks import capture_head_outputs, gated
from kmshc.train.module import GateModule
from kmshc.train.datamodule import batch_of
from kmshc.train.objectives import pair_margin_loss
from kmshc.engine.prefix import gated_hidden
from kmshc.engine.readout import final_hidden
from kmshc.engine.scoring import Scorer
from kmshc.tasks import grammar_task, ioi_task
from kmshc.tasks.base import PairItem, Task
from kmshc.engine.tiny import tiny_model, tiny_tokenizer
from kmshc.types import KmshcError

N_LAYERS, N_HEADS = 3, 4


def aligned_ioi(n: int = 12, seed: int = 0) -> Task:
    """IOI items whose counterfactuals have the clean length under the tiny tokenizer."""
    tok = tiny_tokenizer()
    length = lambda s: len(tok(s)["input_ids"])  # noqa: E731
    items = [it for it in ioi_task(seed=seed, n=400).items
             if all(length(c) == length(s) for c, s in zip(it.counterfactual, (it.good, it.bad)))]
    assert len(items) >= n
    return Task("ioi", "pairs", tuple(items[:n]))


@pytest.fixture(scope="module")
def llama():
    return tiny_model("llama", n_layers=N_LAYERS, n_heads=N_HEADS)


@torch.no_grad()
def _head_outputs(model, seq: torch.Tensor) -> list[torch.Tensor]:
    """Per-layer head outputs ``[T, H, d]`` of one unpadded sequence on the plain model."""
    store: list = []
    with capture_head_outputs(model, store):
        model.base_model(input_ids=seq[None], attention_mask=torch.ones_like(seq)[None])
    return [z[0] for z in store[0]]


def test_gated_off_head_receives_exactly_its_own_counterfactual_output(llama):
    model, tok = llama
    data = encode(aligned_ioi(), tok)
    batch = next(iter(data.batches(4)))
    gates = torch.ones(N_LAYERS, N_HEADS)
    gates[1, 2] = 0  # a head of a middle layer: its clean-run output differs from the patch
    store: list = []
    abl = CounterfactualAblation(model)
    with torch.no_grad(), gated(model, gates, abl.values(batch)), capture_head_outputs(model, store):
        model.base_model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
    z = store[0][1][:, :, 2]  # [R, T, d]: what the projection received for L1H2
    for j, row in enumerate(batch.rows.tolist()):
        t = len(data.seqs[row])
        own = _head_outputs(model, data.cf_seqs[row])[1][:, 2]
        torch.testing.assert_close(z[j, :t], own, atol=1e-5, rtol=1e-5)
        # The patch must not come from another example's counterfactual or from the clean run.
        other = data.cf_seqs[(row + 2) % len(data.seqs)]
        assert not torch.allclose(z[j, :min(t, len(other))], _head_outputs(model, other)[1][:min(t, len(other)), 2])
        assert not torch.allclose(z[j, :t], _head_outputs(model, data.seqs[row])[1][:, 2])


def test_all_heads_patched_give_the_counterfactual_run_where_tokens_agree(llama):
    """Attention is the only mixing across positions: with every head patched, a position whose
    token is the same in both inputs computes exactly what the counterfactual run computes."""
    model, tok = llama
    data = encode(aligned_ioi(), tok)
    batch = next(iter(data.batches(3)))
    h = gated_hidden(model, batch, torch.zeros(1, N_LAYERS, N_HEADS), CounterfactualAblation(model))
    for j, row in enumerate(batch.rows.tolist()):
        cf = data.cf_seqs[row]
        with torch.no_grad():
            ref = final_hidden(model, cf[None], torch.ones_like(cf)[None])[0]
        same = data.seqs[row] == cf
        assert (~same).any() and same.sum() > 3
        torch.testing.assert_close(h[j, :len(cf)][same], ref[same], atol=1e-4, rtol=1e-4)
        assert not torch.allclose(h[j, :len(cf)][~same], ref[~same], atol=1e-4, rtol=1e-4)


def test_scorer_fast_paths_and_multi_mask_batches_match_the_plain_path(llama):
    model, tok = llama
    task = aligned_ioi()
    g = torch.Generator().manual_seed(0)
    masks = torch.ones(5, N_LAYERS, N_HEADS)
    masks[:, 0, 1] = 0  # a shared prefix, so the prefix cache splits at layer 1
    masks[:, 1:] = (torch.rand(5, N_LAYERS - 1, N_HEADS, generator=g) > 0.5).float()
    plain = Scorer(model, tok, task, ablation="counterfactual", batch_size=4, prefix_cache=False,
                   skip_shared_tokens=False, max_rows=10**6)
    fast = Scorer(model, tok, task, ablation="counterfactual", batch_size=4, max_rows=8)
    want, got = plain.outcomes(masks), fast.outcomes(masks)
    # Plain margins sum ~45 log-probs of size ~6 per sentence, so fp32 rounding reaches ~1e-4.
    torch.testing.assert_close(got.margin, want.margin, atol=3e-4, rtol=1e-4)
    assert len(fast.cache) > 0  # the prefix path did run
    for i in range(masks.shape[0]):  # one mask at a time gives the same rows
        torch.testing.assert_close(plain.outcomes(masks[i]).margin[0], want.margin[i], atol=3e-5, rtol=1e-5)
    # Counterfactual patching is not mean ablation: the all-ablated scores differ.
    mean = Scorer(model, tok, task, ablation="mean", train=task)
    none = torch.zeros(1, N_LAYERS, N_HEADS)
    assert not torch.allclose(fast.outcomes(none).margin, mean.outcomes(none).margin)


def test_tasks_without_counterfactuals_are_refused_naming_the_task(llama):
    model, tok = llama
    with pytest.raises(KmshcError, match="'grammar' has no counterfactuals"):
        Scorer(model, tok, grammar_task(n=6), ablation="counterfactual")
    exp = Experiment(model="tiny-llama", task="grammar", n=30, ablation="counterfactual")
    with pytest.raises(KmshcError, match="'grammar' has no counterfactuals"):
        exp.ablation_values
    with pytest.raises(KmshcError, match="field 'ablation'"):
        Experiment(model="tiny-llama", task="grammar", ablation="patching")


def test_a_counterfactual_of_another_length_is_refused_only_by_the_counterfactual_ablation(llama):
    model, tok = llama
    bad = Task("t", "pairs", (PairItem("Mary saw this dog.", "Mary saw this dogs.", counterfactual=(
        "Mary saw this dog.", "Mary saw this dogs.")), PairItem("Mary saw this dog.", "Mary saw this dogs.",
        counterfactual=("Mary and Sarah saw this dog.", "Mary saw this dogs."))))
    data = encode(bad, tok)
    assert data.cf_seqs is None and "t item 1: the counterfactual 'Mary and Sarah" in data.cf_problem
    assert Scorer(model, tok, bad, ablation="zero").n == 2  # other ablations still score the task
    with pytest.raises(KmshcError, match="task 't'.*t item 1: the counterfactual 'Mary and Sarah"):
        Scorer(model, tok, bad, ablation="counterfactual")


def test_training_loss_uses_the_same_patch_as_the_scorer():
    """GateModule's faithfulness with every gate closed is the pair loss of the counterfactual score."""
    exp = Experiment(model="tiny-llama", task="ioi", ablation="counterfactual", seed=0)
    task = aligned_ioi(n=10)
    exp.__dict__["splits"] = {"train": task, "val": task, "test": task}  # aligned items for the tiny tokenizer
    module = GateModule(exp)
    data = module.train_data
    examples = torch.tensor([3, 0, 7])
    batch = batch_of(data, examples)
    loss = module.faithfulness(batch, torch.zeros(batch.rows.numel(), *exp.shape))
    margin = exp.scorer_for("train").outcomes(torch.zeros(exp.shape)).margin[0, examples]
    want = pair_margin_loss(margin, torch.zeros_like(margin))
    torch.testing.assert_close(loss, want, atol=1e-4, rtol=1e-4)
    assert isinstance(make_ablation("counterfactual", exp.loaded[0], None), CounterfactualAblation)


def _module_on_aligned_ioi(experiment_ablation: str, **module_args) -> GateModule:
    exp = Experiment(model="tiny-llama", task="ioi", ablation=experiment_ablation, seed=0)
    task = aligned_ioi(n=10)
    exp.__dict__["splits"] = {"train": task, "val": task, "test": task}
    return GateModule(exp, **module_args)


def test_model_ablation_trains_under_counterfactual_while_the_experiment_keeps_mean():
    """``model.ablation``: the training loss is the counterfactual run's, validation stays the experiment's."""
    trained = _module_on_aligned_ioi("mean", ablation="counterfactual")
    oracle = _module_on_aligned_ioi("counterfactual")  # the experiment itself under counterfactual
    plain = _module_on_aligned_ioi("mean")
    examples = torch.tensor([3, 0, 7])
    gates = torch.rand(3, *trained.experiment.shape, generator=torch.Generator().manual_seed(0))

    def loss(m: GateModule) -> torch.Tensor:
        batch = batch_of(m.train_data, examples)
        return m.faithfulness(batch, gates.repeat_interleave(batch.rows.numel() // 3, dim=0))
    torch.testing.assert_close(loss(trained), loss(oracle), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(loss(trained), loss(plain), atol=1e-3)
    assert isinstance(trained.train_ablation, CounterfactualAblation)
    assert trained.val_scorer.ablation is trained.experiment.ablation_values  # the search's and certificate's
    assert trained.experiment.ablation == "mean"


def test_model_ablation_names_the_field_when_it_cannot_work():
    with pytest.raises(KmshcError, match="model.ablation: expected one of zero, mean, resample, counterfactual"):
        GateModule(Experiment(model="tiny-llama", task="grammar", n=20), ablation="patching")
    module = GateModule(Experiment(model="tiny-llama", task="grammar", n=20), ablation="counterfactual")
    with pytest.raises(KmshcError, match="model.ablation: task 'grammar' has no counterfactuals"):
        module.train_ablation


def test_the_counterfactual_run_of_a_training_row_is_counted_once_in_the_cost():
    from kmshc.engine.hooks import count_rows
    examples = torch.tensor([1, 4])
    counted = {}
    for name, m in (("mean", _module_on_aligned_ioi("mean")),
                    ("counterfactual", _module_on_aligned_ioi("mean", ablation="counterfactual"))):
        _ = m.train_ablation  # a mean fit runs outside the count, as in training_step
        for step in ("first", "again"):  # again: the same rows in another batch; their values are cached
            batch = batch_of(m.train_data, examples if step == "first" else examples.flip(0))
            with count_rows(m.lm, m.cost):
                m.faithfulness(batch, torch.zeros(batch.rows.numel(), *m.experiment.shape))
            counted[name, step] = m.cost.seq_rows
    assert counted["mean", "first"] > 0 and counted["counterfactual", "first"] == 2 * counted["mean", "first"]
    assert counted["counterfactual", "again"] - counted["counterfactual", "first"] == counted["mean", "first"]
