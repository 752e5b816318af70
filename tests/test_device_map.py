"""A model split by an explicit ``device_map``: layer 1 of a tiny Llama offloaded by accelerate
(its weights on ``meta``, computed on the CPU) scores exactly like the model in one piece, under
every ablation, with the prefix cache and with batched masks."""
from __future__ import annotations

import pytest
import torch

from kmshc.engine.device import execution_device, input_device, model_devices
from kmshc.experiment import Experiment
from kmshc.engine.hooks import gated
from kmshc.engine.models import load_model
from kmshc.types import KmshcError

SPLIT = {"model.embed_tokens": "cpu", "model.rotary_emb": "cpu", "model.layers.0": "cpu", "model.layers.1": "disk",
         "model.norm": "cpu", "lm_head": "cpu"}


def test_the_split_model_really_is_split():
    model, _ = load_model("tiny-llama", device_map=SPLIT)
    assert {p.device.type for p in model.model.layers[1].parameters()} == {"meta"}
    assert {p.device.type for p in model.model.layers[0].parameters()} == {"cpu"}
    assert execution_device(model.model.layers[1]) == input_device(model) == torch.device("cpu")
    assert model_devices(model) == [torch.device("cpu")]


@pytest.mark.parametrize("ablation", ["zero", "mean", "resample"])
def test_split_model_scores_like_the_whole_one(ablation):
    masks = (torch.rand(5, 2, 4, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    masks[1:, 0] = masks[0, 0]  # layer 0 shared: the prefix cache starts masked runs at layer 1
    common = dict(model="tiny-llama", n=60, ablation=ablation, device="cpu", batch_size=8)
    whole = Experiment(**common).scorer_for("val")
    split = Experiment(**common, device_map=SPLIT).scorer_for("val")
    for m in (masks, masks[3]):
        a, b = whole.outcomes(m), split.outcomes(m)
        torch.testing.assert_close(b.margin, a.margin, rtol=0, atol=1e-6)
        assert torch.equal(a.correct, b.correct)
    assert split.cache is not None and split.cache.hits + split.cache.misses > 0


def test_gates_and_values_follow_each_layers_activations():
    """Gates in float64 and values in float64 reach a float32 layer cast to its activations."""
    model, _ = load_model("tiny-llama", device_map=SPLIT)
    ids = torch.tensor([[0, 5, 6, 7]])
    gates = torch.ones(2, 4, dtype=torch.float64)
    gates[1, 2] = 0.0
    values = [torch.zeros(4, 16, dtype=torch.float64), torch.full((4, 16), 0.5, dtype=torch.float64)]
    with gated(model, gates, values):
        out = model(ids).logits
    with gated(model, gates.float(), [v.float() for v in values]):
        ref = model(ids).logits
    assert out.dtype is torch.float32 and torch.equal(out, ref)


def test_a_bad_device_map_is_named():
    with pytest.raises(KmshcError, match="device_map"):
        load_model("tiny-llama", device_map=["cpu"])
