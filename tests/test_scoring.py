"""Scorers against hand-computed values, batched multi-mask scoring, and the probe."""
from __future__ import annotations

import pytest
import torch

from kmshc.engine.encoding import start_token_id
from kmshc.engine.probe import fit_probe
from kmshc.engine.readout import Outcome, class_margin
from kmshc.engine.scoring import Scorer
from kmshc.tasks import grammar_task, split_task
from kmshc.tasks.base import LabelItem, PairItem, Task
from kmshc.engine.tiny import tiny_model
from kmshc.types import KmshcError

PAIRS = Task("p", "pairs", (PairItem("The dog runs.", "The dog run."),
                            PairItem("Mary saw these books.", "Mary saw these book."),
                            PairItem("3 + 4 = 7", "3 + 4 = 9"),
                            PairItem("The girls near the tree sing.", "The girls near the tree sings.")))
LABELS = (" True", " False")
PROMPTS = Task("l", "labels", (LabelItem("3 + 4 = 7. Answer:", 0), LabelItem("3 + 4 = 9. Answer:", 1),
                               LabelItem("The dog runs. Answer:", 0)), labels=LABELS)


@torch.no_grad()
def _hand_logprob(model, tok, text: str) -> float:
    """Sum over tokens 1..T-1 of log softmax(logits[t-1])[id_t], from the model's own logits."""
    ids = torch.tensor([[start_token_id(tok)] + tok(text, add_special_tokens=False)["input_ids"]])
    logp = torch.log_softmax(model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0].double(), -1)
    return float(sum(logp[t - 1, ids[0, t]] for t in range(1, ids.shape[1])))


@pytest.mark.parametrize("arch", ["gpt2", "llama", "gpt_neox"])
def test_pair_logprob_matches_manual_log_softmax(arch):
    model, tok = tiny_model(arch)
    scorer = Scorer(model, tok, PAIRS, scorer="pair_logprob", ablation="zero", batch_size=3)
    out = scorer.outcomes(scorer.full_mask())
    hand = torch.tensor([_hand_logprob(model, tok, it.good) - _hand_logprob(model, tok, it.bad)
                         for it in PAIRS.items], dtype=torch.float64)
    torch.testing.assert_close(out.margin[0].double(), hand, atol=1e-4, rtol=1e-4)
    assert torch.equal(out.correct[0], (hand > 0).float())
    assert scorer(scorer.full_mask()) == pytest.approx(float((hand > 0).float().mean()))
    # Without the shared-prefix shortcut the margins are the same.
    slow = Scorer(model, tok, PAIRS, scorer="pair_logprob", ablation="zero", skip_shared_tokens=False,
                  prefix_cache=False)
    torch.testing.assert_close(slow.outcomes(slow.full_mask()).margin[0].double(), hand, atol=1e-4, rtol=1e-4)


def test_label_tokens_matches_hand_logits(tiny_llama):
    model, tok = tiny_llama
    scorer = Scorer(model, tok, PROMPTS, scorer="label_tokens", ablation="zero", batch_size=2)
    out = scorer.outcomes(scorer.full_mask())
    label_ids = [tok(w, add_special_tokens=False)["input_ids"][0] for w in LABELS]
    for i, it in enumerate(PROMPTS.items):
        ids = torch.tensor([[start_token_id(tok)] + tok(it.prompt, add_special_tokens=False)["input_ids"]])
        with torch.no_grad():
            last = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0, -1, label_ids]
        expected = last[it.label] - last[1 - it.label]
        assert float(out.margin[0, i]) == pytest.approx(float(expected), abs=1e-4)
        assert float(out.correct[0, i]) == float(expected > 0)


def test_class_margin_and_accuracy_by_hand():
    logits = torch.tensor([[1.0, 3.0, 2.0], [5.0, 0.0, -1.0], [0.0, 0.0, 4.0]])
    gold = torch.tensor([1, 2, 2])
    assert torch.equal(class_margin(logits, gold), torch.tensor([1.0, -6.0, 4.0]))
    out = Outcome(correct=torch.tensor([[1.0, 0.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.5]]), margin=torch.zeros(2, 4))
    assert out.accuracy.tolist() == pytest.approx([0.75, 0.125])


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
@pytest.mark.parametrize("ablation", ["zero", "mean", "resample"])
def test_batched_masks_equal_sequential_through_scorer(arch, ablation):
    model, tok = tiny_model(arch)
    splits = split_task(grammar_task(seed=0, n=30), seed=0)
    scorer = Scorer(model, tok, splits["val"], ablation=ablation, train=splits["train"], batch_size=4, max_rows=12)
    g = torch.Generator().manual_seed(0)
    masks = (torch.rand(5, *scorer.shape, generator=g) > 0.5).float()
    masks[0], masks[1] = 1, 0
    batched = scorer.outcomes(masks)
    assert scorer.evaluations == 5
    for i in range(5):
        single = scorer.outcomes(masks[i])
        torch.testing.assert_close(single.margin[0], batched.margin[i], atol=1e-4, rtol=1e-4)
    assert scorer.evaluations == 10
    assert not torch.allclose(batched.margin[0], batched.margin[1])


def test_zero_mask_differs_from_full_and_keep_all_is_unhooked(tiny_gpt2):
    model, tok = tiny_gpt2
    task = Task("p", "pairs", PAIRS.items[:2])
    scorer = Scorer(model, tok, task, ablation="zero", skip_shared_tokens=False, prefix_cache=False)
    full = scorer.outcomes(scorer.full_mask()).margin[0].double()
    hand = torch.tensor([_hand_logprob(model, tok, it.good) - _hand_logprob(model, tok, it.bad) for it in task.items], dtype=torch.float64)
    torch.testing.assert_close(full, hand, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(scorer.outcomes(torch.zeros(scorer.shape)).margin[0].double(), hand, atol=1e-3)


def test_fit_probe_separates_synthetic_features_held_out():
    g = torch.Generator().manual_seed(0)
    n, f = 400, 32
    y = torch.arange(n) % 2
    x = torch.randn(n, f, generator=g)
    x[:, 5] += 6.0 * (2 * y - 1)  # the class signal: the largest-variance direction
    probe = fit_probe(x[:200], y[:200], dim=3)
    assert probe.components.shape == (f, 3) and probe.weight.shape == (3, 2)
    held_out = (probe.logits(x[200:]).argmax(-1) == y[200:]).float().mean()
    assert held_out > 0.97
    # Random labels on the same features: no better than chance held out.
    y_rand = torch.randint(0, 2, (n,), generator=g)
    noise = fit_probe(x[:200], y_rand[:200], dim=3)
    assert (noise.logits(x[200:]).argmax(-1) == y_rand[200:]).float().mean() < 0.65
    # Deterministic: the same data gives the same probe.
    again = fit_probe(x[:200], y[:200], dim=3)
    assert torch.allclose(again.logits(x[200:]), probe.logits(x[200:]))


def test_probe_scorer_runs_held_out_on_pairs(tiny_gpt2):
    model, tok = tiny_gpt2
    splits = split_task(grammar_task(seed=0, n=40), seed=0)
    scorer = Scorer(model, tok, splits["val"], scorer="probe", ablation="zero", train=splits["train"], probe_dim=2)
    out = scorer.outcomes(torch.stack([scorer.full_mask(), torch.zeros(scorer.shape)]))
    assert out.correct.shape == (2, len(splits["val"]))
    assert set(out.correct.unique().tolist()) <= {0.0, 0.5, 1.0}  # per pair: mean over its two sentences
    fixed = Scorer(model, tok, splits["val"], scorer="probe", ablation="zero", train=splits["train"], probe_dim=2,
                   probe_fixed=True)
    torch.testing.assert_close(fixed.outcomes(fixed.full_mask()).margin, out.margin[:1], atol=1e-4, rtol=1e-4)


def test_scorer_input_errors(tiny_gpt2):
    model, tok = tiny_gpt2
    with pytest.raises(KmshcError, match="expected one of pair_logprob, label_tokens, probe"):
        Scorer(model, tok, PAIRS, scorer="bleu")
    with pytest.raises(KmshcError, match="needs a label task"):
        Scorer(model, tok, PAIRS, scorer="label_tokens")
    with pytest.raises(KmshcError, match="needs minimal pairs"):
        Scorer(model, tok, PROMPTS, scorer="pair_logprob")
    with pytest.raises(KmshcError, match="training split"):
        Scorer(model, tok, PAIRS, scorer="probe", ablation="zero")
    with pytest.raises(KmshcError, match="training split"):
        Scorer(model, tok, PAIRS, ablation="mean")
    scorer = Scorer(model, tok, PAIRS, ablation="zero")
    with pytest.raises(ValueError, match="masks must be"):
        scorer.outcomes(torch.ones(3, 3))
