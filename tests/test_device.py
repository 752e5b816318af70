"""The device option: spelling and resolution, dtype "auto" by the device actually used, execution
devices under accelerate, Lightning mapping, the frozen model following the trainer, and CUDA
agreement with the CPU (those run wherever a GPU exists)."""
from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from kmshc.engine import models
from kmshc.engine.device import (execution_device, input_device, lightning_accelerator, parse_device_spec,
                          resolve_device)
from kmshc.engine.encoding import Batch
from kmshc.experiment import Experiment
from kmshc.types import KmshcError

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture
def fake_cuda(monkeypatch):
    """CUDA 'present' on a machine without it, and a CPU without native bf16."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(models, "cpu_flags", lambda: {"avx2"})


@pytest.mark.parametrize("spec, expected", [("cpu", ("cpu", None)), ("auto", ("auto", None)), (None, ("auto", None)),
                                            ("cuda", ("cuda", None)), ("CUDA:3", ("cuda", 3))])
def test_device_spellings(spec, expected):
    assert parse_device_spec(spec) == expected


@pytest.mark.parametrize("spec", ["gpu", "cuda:x", "cpu:1", "auto:0", "mps", ""])
def test_bad_device_spellings_are_named(spec):
    with pytest.raises(KmshcError, match="auto, cpu, cuda or cuda:N"):
        parse_device_spec(spec)


def test_auto_is_cpu_without_cuda_and_cuda_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu") == resolve_device("cpu")
    with pytest.raises(KmshcError, match="CUDA is not available"):
        resolve_device("cuda:0")


def test_auto_and_cuda_take_the_local_rank_gpu(monkeypatch, fake_cuda):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setenv("LOCAL_RANK", "2")
    assert resolve_device("auto") == resolve_device("cuda") == torch.device("cuda", 2)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(KmshcError, match="4 CUDA device"):
        resolve_device("cuda:7")


def test_dtype_auto_follows_the_device_used_not_cuda_existing(fake_cuda):
    assert models._resolve_dtype("auto", torch.device("cpu")) is torch.float32
    assert models._resolve_dtype("auto", torch.device("cuda", 0)) is torch.bfloat16
    model, _ = models.load_model("tiny-gpt2", dtype="auto", device="cpu")
    assert next(model.parameters()).dtype is torch.float32
    assert models._resolve_dtype("auto", device_map={"": "cpu"}) is torch.float32
    assert models._resolve_dtype("auto", device_map={"model.layers.0": 0, "lm_head": "cpu"}) is torch.bfloat16


def test_execution_device_prefers_accelerate_hooks_and_skips_meta():
    lin = nn.Linear(2, 2)
    assert execution_device(lin) == torch.device("cpu")
    offloaded = nn.Linear(2, 2, device="meta")
    assert execution_device(offloaded) == torch.device("cpu")  # nothing real: compute on the CPU
    offloaded._hf_hook = SimpleNamespace(execution_device=1)
    assert execution_device(offloaded) == torch.device("cuda", 1)
    offloaded._hf_hook = SimpleNamespace(execution_device="cuda:3")
    assert execution_device(offloaded) == torch.device("cuda", 3)


@pytest.mark.parametrize("spec, expected", [("cpu", ("cpu", None)), ("cuda", ("gpu", None)), ("cuda:2", ("gpu", [2])),
                                            ("auto", ("auto", None))])
def test_lightning_accelerator(spec, expected):
    assert lightning_accelerator(spec) == expected


def test_experiment_device_fields_are_checked_and_left_out_of_results():
    exp = Experiment(model="tiny-gpt2", device="cpu")
    assert exp.to_dict()["device"] == "cpu" and exp.to_dict()["device_map"] is None
    assert "device" not in exp.result_dict() and "device_map" not in exp.result_dict()
    assert Experiment(model="tiny-gpt2", device="auto").result_dict() == exp.result_dict()
    with pytest.raises(KmshcError, match="device"):
        Experiment(device="gpu")
    with pytest.raises(KmshcError, match="device_map"):
        Experiment(device_map={"model.layers.0": 1.5})


def test_batch_to_moves_tokens_and_keeps_indices():
    b = Batch(torch.tensor([0]), torch.tensor([0, 1]), torch.ones(2, 3, dtype=torch.long),
              torch.ones(2, 3, dtype=torch.long))
    m = b.to("meta")
    assert m.input_ids.device.type == m.attention_mask.device.type == "meta"
    assert m.rows.device.type == m.examples.device.type == "cpu"


def test_module_setup_puts_the_frozen_model_on_the_trainer_device():
    from kmshc.train.module import GateModule
    module = GateModule(Experiment(model="tiny-gpt2", n=20, device="cpu", ablation="zero"))
    module._trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device("meta")))
    module.setup("fit")
    assert input_device(module.lm) == torch.device("cpu")  # meta holds no data: execution falls back
    assert {p.device.type for p in module.lm.parameters()} == {"meta"}
    assert set(module.state_dict()) == {"gates.log_alpha"}  # still only the gates are checkpointed
    assert not any(p.requires_grad for p in module.lm.parameters())


@pytest.mark.slow  # a subprocess
def test_score_help_lists_device():
    out = subprocess.run([sys.executable, "-m", "kmshc", "score", "--help"], capture_output=True, text=True,
                         check=True).stdout
    assert "--device" in out and "--device_map" in out


# ---------------------------------------------------------------- where a GPU exists
@needs_cuda
def test_cuda_scores_agree_with_cpu():
    masks = (torch.rand(4, 2, 4, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    out = {}
    for device in ("cpu", "cuda"):
        exp = Experiment(model="tiny-llama", n=60, ablation="mean", device=device, batch_size=8)
        scorer = exp.scorer_for("val")
        assert scorer.device.type == device
        out[device] = scorer.outcomes(masks)
    assert out["cuda"].margin.device.type == "cpu"
    torch.testing.assert_close(out["cuda"].margin, out["cpu"].margin, atol=1e-4, rtol=1e-4)


@needs_cuda
def test_cuda_device_map_with_cpu_offload_agrees_with_one_device():
    masks = (torch.rand(3, 2, 4, generator=torch.Generator().manual_seed(1)) > 0.5).float()
    split = {"model.embed_tokens": 0, "model.rotary_emb": 0, "model.layers.0": 0, "model.layers.1": "cpu",
             "model.norm": 0, "lm_head": 0}
    whole = Experiment(model="tiny-llama", n=60, ablation="mean", device="cuda").scorer_for("val").outcomes(masks)
    spread = Experiment(model="tiny-llama", n=60, ablation="mean", device_map=split).scorer_for("val").outcomes(masks)
    torch.testing.assert_close(spread.margin, whole.margin, atol=1e-4, rtol=1e-4)


@needs_cuda
def test_module_setup_moves_the_model_to_the_gpu():
    from kmshc.train.module import GateModule
    module = GateModule(Experiment(model="tiny-gpt2", n=20, device="cpu"))
    module._trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device("cuda", 0)))
    module.setup("fit")
    assert input_device(module.lm).type == "cuda"
