"""Cost counting (kmshc.engine.cost): exact example-forward counts on tiny models, through the prefix
cache, backward passes, the search log (resume) and the circuit JSON."""
from __future__ import annotations

import json
import random

import pytest
import torch

from kmshc.engine.cost import RowCount
from kmshc.engine.hooks import count_rows, gated
from kmshc.engine.readout import final_hidden
from kmshc.engine.scoring import Scorer
from kmshc.search import Recorder, refine
from kmshc.tasks import grammar_task
from kmshc.tasks.base import LabelItem, Task
from kmshc.engine.tiny import tiny_model
from kmshc.types import Circuit, KmshcError, circuit_from_dict, read_circuit

L, H, N = 4, 4, 10


@pytest.fixture(scope="module")
def llama():
    return tiny_model("llama", n_layers=L, n_heads=H)


@pytest.fixture(scope="module")
def task():
    return grammar_task(n=N, seed=3)


def masks_differing_at(layer: int) -> torch.Tensor:
    """Two masks ``[2, L, H]`` that agree below ``layer`` and differ in it."""
    m = torch.ones(2, L, H)
    m[1, layer, 0] = 0
    return m


def test_two_masks_without_prefix_sharing_cost_two_rows_per_example(llama, task):
    s = Scorer(*llama, task, ablation="zero", batch_size=4)
    s.outcomes(masks_differing_at(0))
    assert s.cost.example_rows == 2 * N and s.cost.example_forwards == 2 * N
    assert s.cost.to_dict()["layer_rows"] == 2 * N * L and s.cost.backward_example_forwards == 0


def test_rows_that_start_at_a_cached_layer_count_the_layers_they_run(llama, task):
    layer = L - 1
    s = Scorer(*llama, task, ablation="mean", train=task, batch_size=4)
    s.outcomes(masks_differing_at(layer))
    prefix, masked = N * layer / L, 2 * N * (L - layer) / L  # the prefix runs once per example
    assert s.cost.example_forwards == pytest.approx(prefix + masked)
    assert s.cost.example_rows == 2 * N  # every masked row still reached the last layer
    s.outcomes(masks_differing_at(layer))  # the prefix now comes from the cache
    assert s.cost.example_forwards == pytest.approx(prefix + 2 * masked)
    plain = Scorer(*llama, task, ablation="mean", train=task, batch_size=4, prefix_cache=False)
    plain.outcomes(masks_differing_at(layer))
    assert plain.cost.example_forwards == 2 * N


def test_resample_values_are_forwards_too(llama, task):
    s = Scorer(*llama, task, ablation="resample", batch_size=4)
    s.outcomes(masks_differing_at(0))
    assert s.cost.example_forwards == 2 * N + N  # the corrupted inputs run once per batch, then are cached
    s.outcomes(1 - masks_differing_at(0))  # new masks, same batches: the cached values are reused
    assert s.cost.example_forwards == 4 * N + N


def test_shared_tokens_save_logit_positions_not_rows(llama, task):
    fast = Scorer(*llama, task, ablation="zero", prefix_cache=False)
    slow = Scorer(*llama, task, ablation="zero", prefix_cache=False, skip_shared_tokens=False)
    fast.outcomes(torch.ones(L, H))
    slow.outcomes(torch.ones(L, H))
    assert fast.cost.example_forwards == slow.cost.example_forwards == N
    scored = sum(len(s) - 1 for s in slow.data.seqs)  # every token after the start token
    assert slow.cost.logit_positions == scored > fast.cost.logit_positions


def test_a_label_task_counts_one_row_per_prompt(llama):
    prompts = Task("l", "labels", tuple(LabelItem(f"Is {w} True? Answer:", i % 2) for i, w in
                                        enumerate(["the dog", "a cat", "the bird"])), labels=(" True", " False"))
    s = Scorer(*llama, prompts, scorer="label_tokens", ablation="zero")
    masks = torch.ones(3, L, H)
    masks[1, 0, 0] = masks[2, 0, 1] = 0  # three masks that differ in layer 0: no prefix to share
    s.outcomes(masks)
    assert s.cost.rows_per_example == 1 and s.cost.example_forwards == 3 * 3
    s.outcomes(torch.ones(2, L, H))  # identical masks run once
    assert s.cost.example_forwards == 3 * 3 + 3


def test_backward_is_counted_when_it_runs(llama, task):
    model, _ = llama
    s = Scorer(*llama, task, ablation="zero")
    batch = next(s.data.batches(4))
    count = RowCount(L, 2)
    gates = torch.ones(L, H, requires_grad=True)
    with count_rows(model, count), gated(model, gates):
        h = final_hidden(model, batch.input_ids, batch.attention_mask)
    assert count.example_forwards == 4 and count.backward_example_forwards == 0
    h.float().pow(2).mean().backward()  # outside the block: still counted, through every layer
    assert count.backward_example_forwards == 4 and count.example_forwards == 8


def test_checkpoint_state_adds_back():
    a = RowCount(4, 2, seq_rows=6, seq_layer_rows=20, seq_backward_layer_rows=8, logit_positions=3)
    b = RowCount(4, 2, seq_rows=1)
    b.restore(a.state())
    assert b.state() == {**a.state(), "seq_rows": 7}


# ---------------------------------------------------------------- the search log
def planted(calls: list[int], crash_after: int | None = None):
    """A monotone score on a 5x6 grid; one unit of cost per mask scored (``calls``)."""
    def evaluate_many(masks: torch.Tensor) -> list[float]:
        if crash_after is not None and sum(calls) + len(masks) > crash_after:
            raise RuntimeError("crash")
        calls.append(len(masks))
        return [0.5 + 0.1 * sum(bool(m.reshape(-1)[i] > 0.5) for i in (3, 17, 25, 9)) for m in masks]
    return evaluate_many


@pytest.mark.parametrize("crash_after", [3, 11])
def test_resume_restores_the_cost_from_the_log(tmp_path, crash_after):
    gates = {h: random.Random(h).random() for h in range(30)}
    ref_calls: list[int] = []
    ref = Recorder(planted(ref_calls), forwards=lambda: 2.5 * sum(ref_calls))
    refine(ref, (5, 6), gates, seed=1, strategy="ordered")
    state = tmp_path / "search_state.json"
    first: list[int] = []
    with pytest.raises(RuntimeError):
        refine(Recorder(planted(first, crash_after), path=state, fingerprint={},
                        forwards=lambda: 2.5 * sum(first)), (5, 6), gates, seed=1, strategy="ordered")
    assert json.loads(state.read_text())["example_forwards"] == 2.5 * sum(first)
    live: list[int] = []
    rec = Recorder(planted(live), path=state, resume=True, fingerprint={}, forwards=lambda: 2.5 * sum(live))
    refine(rec, (5, 6), gates, seed=1, strategy="ordered")
    assert rec.example_forwards == ref.example_forwards == 2.5 * rec.evaluations
    assert json.loads(state.read_text())["example_forwards"] == ref.example_forwards



def test_each_decision_records_what_the_search_had_spent_and_a_resume_keeps_it(tmp_path):
    gates = {h: random.Random(h).random() for h in range(30)}
    calls: list[int] = []
    spent_at: list[float] = []
    ref = Recorder(planted(calls), forwards=lambda: 2.5 * sum(calls))
    real = ref.decision
    ref.decision = lambda rng, size=None, **e: (spent_at.append(2.5 * sum(calls)), real(rng, size, **e))[1]
    refine(ref, (5, 6), gates, seed=1, strategy="ordered")
    assert [t["example_forwards"] for t in ref.trace] == spent_at  # the cost at the moment of each decision
    assert spent_at == sorted(spent_at) and spent_at[0] < spent_at[-1]

    state = tmp_path / "search_state.json"
    first: list[int] = []
    with pytest.raises(RuntimeError):
        refine(Recorder(planted(first, 11), path=state, fingerprint={}, forwards=lambda: 2.5 * sum(first)),
               (5, 6), gates, seed=1, strategy="ordered")
    assert 0 < len(json.loads(state.read_text())["trace"]) < len(ref.trace)
    live: list[int] = []
    rec = Recorder(planted(live), path=state, resume=True, fingerprint={}, forwards=lambda: 2.5 * sum(live))
    refine(rec, (5, 6), gates, seed=1, strategy="ordered")
    assert rec.trace == ref.trace  # replayed decisions keep the interrupted run's cost; later ones add to it

def test_a_log_with_a_bad_cost_names_the_field(tmp_path):
    state = tmp_path / "s.json"
    state.write_text(json.dumps({"fingerprint": {}, "log": [], "trace": [], "example_forwards": "many"}))
    with pytest.raises(KmshcError, match="example_forwards"):
        Recorder(planted([]), path=state, resume=True)


def test_circuit_json_carries_example_forwards(tmp_path):
    c = Circuit(model="m", task="t", heads=("L0H1",), n_heads_total=8, evaluations=3, example_forwards=12.5)
    c.save(tmp_path / "c.json")
    assert read_circuit(tmp_path / "c.json").example_forwards == 12.5
    assert circuit_from_dict({"model": "m", "task": "t", "heads": [], "n_heads_total": 8}).example_forwards is None
    with pytest.raises(KmshcError, match="example_forwards"):
        circuit_from_dict({"model": "m", "task": "t", "heads": [], "n_heads_total": 8, "example_forwards": "x"})


# ---------------------------------------------------------------- the entry points
def _entry(name: str):
    import importlib.util
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location(f"{name}_entry_cost", root / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod, root


def test_training_records_forward_and_backward_rows(tmp_path):
    train, root = _entry("train")
    args = ["fit", "--config", str(root / "configs/train/tiny.yaml"), "--runs_dir", str(tmp_path),
            "--trainer.enable_progress_bar", "false"]
    cli = train.main(args)
    n_train, steps, batch = len(cli.model.experiment.splits["train"]), cli.trainer.global_step, 8
    per_epoch = -(-n_train // batch)
    seen = sum(min(batch, n_train - batch * (i % per_epoch)) for i in range(steps))
    cost = json.loads((tmp_path / "tiny" / "gates.json").read_text())["cost"]
    assert cost["train"]["forward"] == cost["train"]["backward"] == seen
    val = cli.model.val_scorer
    assert cost["validation"]["example_forwards"] == val.evaluations * val.n
    circ = read_circuit(tmp_path / "tiny" / "circuit_learned.json")
    assert circ.example_forwards == cost["example_forwards"] == 2 * seen + val.evaluations * val.n
    # stopped at half time and resumed from the checkpoint: the training rows add up to the same
    train.main(args + ["--name", "r", "--trainer.max_steps", str(steps // 2)])
    train.main(args + ["--name", "r", "--ckpt_path", str(tmp_path / "r" / "checkpoints" / "last.ckpt")])
    assert json.loads((tmp_path / "r" / "gates.json").read_text())["cost"]["train"] == cost["train"]


def test_search_records_its_cost_and_resume_keeps_it(tmp_path):
    search, root = _entry("search")
    args = ["--config", str(root / "configs/search/tiny.yaml"), "--progress", "false",
            "--threshold", "0.0", "--runs_dir", str(tmp_path), "--name", "c"]
    out = search.main(args)
    circ = read_circuit(tmp_path / "c" / "circuit_searched.json")
    n_val = circ.scores["val"]["n"]
    assert out["example_forwards"] == circ.example_forwards
    assert 0 < circ.example_forwards <= circ.evaluations * n_val  # the prefix cache only ever saves
    assert json.loads((tmp_path / "c" / "search_state.json").read_text())["example_forwards"] == circ.example_forwards
    assert circ.extra["verify_cost"]["example_forwards"] > 0
    again = search.main(args + ["--resume", "true"])  # replays the whole log: nothing new runs
    assert again["example_forwards"] == circ.example_forwards
