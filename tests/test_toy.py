"""The toy induction model and its task: sampler, pairs, determinism, saving, CLI, reference scoring."""
from __future__ import annotations

import json

import pytest
import torch

from kmshc.cli import main as cli_main
from kmshc.engine.diagnostics import HeadDiagnostics
from kmshc.toy.ground_truth import agreement, chance, check_circuit, reference_circuit, single_ablation
from kmshc.engine.models import load_model
from kmshc.tasks import make_task
from kmshc.tasks.toy_induction import sample_induction, toy_induction_task
from kmshc.toy.induction import ToyConfig, toy_tokenizer, train_toy
from kmshc.types import KmshcError


def test_sampler_repeats_one_segment_at_a_random_later_offset():
    b = sample_induction(torch.Generator().manual_seed(0), 500, seq_len=32, vocab=64, min_segment=4, max_segment=10)
    for i in range(500):
        s, d, m = int(b.src[i]), int(b.dst[i]), int(b.length[i])
        assert 4 <= m <= 10 and s + m <= d and d + m <= 32
        assert torch.equal(b.tokens[i, s:s + m], b.tokens[i, d:d + m])
    assert len(set(b.dst.tolist())) > 10 and len(set((b.dst - b.src).tolist())) > 10  # offsets really vary
    mask = b.loss_mask()
    assert mask.sum(1).tolist() == (b.length - 1).tolist()  # all copied tokens but the first
    with pytest.raises(KmshcError, match="max_segment"):
        sample_induction(torch.Generator(), 2, seq_len=10, vocab=64, min_segment=4, max_segment=6)


def test_pairs_end_with_the_induction_answer_against_a_token_of_the_same_segment():
    task = make_task("toy_induction", seed=3, n=200)
    assert task.name == "toy_induction" and len(task) == 200
    assert task.items == toy_induction_task(seed=3, n=200).items  # seeded
    for it in task.items:
        good, bad = it.good.split(), it.bad.split()
        assert good[:-1] == bad[:-1] and good[-1] != bad[-1]
        prefix, cue = good[:-1], good[-2]
        followers = {prefix[i + 1] for i in range(len(prefix) - 1) if prefix[i] == cue}
        assert good[-1] in followers     # the token that followed the cue earlier
        assert bad[-1] in prefix         # the distractor was seen too: "seen before" does not decide


def test_tokenizer_maps_each_token_word_to_one_id():
    tok = toy_tokenizer(8)
    assert tok("t0 t7 t3", add_special_tokens=False)["input_ids"] == [2, 9, 5]
    assert tok.convert_tokens_to_ids("<|endoftext|>") == 0 and len(tok) == 10


def test_training_is_deterministic_and_the_cli_writes_a_loadable_folder(tmp_path, capsys):
    cfg = ToyConfig(seed=5, steps=10, check_every=5)
    a, b = train_toy(cfg), train_toy(cfg)
    assert a.steps == 10
    for (name, p), q in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.equal(p, q), name
    assert cli_main(["toy", "--seed", "5", "--steps", "10", "--out", str(tmp_path / "m")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["steps"] == 10 and json.loads((tmp_path / "m" / "toy.json").read_text())["config"]["seed"] == 5
    model, _ = load_model(str(tmp_path / "m"))
    for p, q in zip(model.state_dict().values(), a.model.state_dict().values()):
        assert torch.equal(p, q)  # the saved folder is the deterministic training's result
    assert cli_main(["score", "--model", str(tmp_path / "m"), "--task", "toy_induction", "--limit", "20"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 20
    assert cli_main(["toy", "--steps", "20", "--out", str(tmp_path / "m")]) == 2  # refuses to overwrite


def _diag(prev_l0, ind_l1) -> HeadDiagnostics:
    prev = torch.tensor([prev_l0, [0.1] * 4])
    ind = torch.tensor([[0.0] * 4, ind_l1])
    return HeadDiagnostics(previous_token=prev, duplicate_token=torch.zeros(2, 4), induction=ind,
                           current_token=torch.zeros(2, 4))


def test_reference_and_agreement_by_hand():
    ref = reference_circuit(_diag([0.8, 0.2, 0.35, 0.1], [0.9, 0.1, 0.5, 0.29]))
    assert ref.previous_token == ("L0H0", "L0H2") and ref.induction == ("L1H0", "L1H2")
    a = agreement(["L0H0", "L1H2", "L1H3"], ref)
    assert (a.precision, a.recall, a.has_mechanism) == (pytest.approx(2 / 3), 0.5, True)
    assert check_circuit(["L0H0", "L1H2"], ref, min_precision=0.8) == []
    assert any("previous-token" in f for f in check_circuit(["L1H0", "L1H2"], ref, 0.5))
    assert any("induction" in f for f in check_circuit(["L0H0", "L0H2"], ref, 0.5))
    assert any("precision" in f for f in check_circuit(["L0H0", "L1H0", "L0H1", "L1H1"], ref, 0.8))


def test_chance_baseline_counts_pairs_by_hand():
    ref = reference_circuit(_diag([0.8, 0.2, 0.35, 0.1], [0.9, 0.1, 0.5, 0.29]))  # 2 + 2 of 8 heads
    precision, mechanism = chance(ref, 8, 2)
    assert precision == 0.5
    assert mechanism == pytest.approx(4 / 28)  # one of 2 previous-token heads and one of 2 induction heads
    assert chance(ref, 8, 8)[1] == 1.0


def test_single_ablation_table_masks():
    def accuracy(masks):  # a planted circuit: L0H1 is necessary, everything else free
        return masks[:, 0, 1].clone()
    tab = single_ablation(accuracy, (2, 4))
    assert (tab.full, tab.empty) == (1.0, 0.0)
    assert tab.without["L0H1"] == 0.0 and tab.without["L1H3"] == 1.0
    assert tab.redundant(["L0H1", "L1H0"], tolerance=0.02) == ["L1H0"]
