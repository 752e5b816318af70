"""The one table of architecture knowledge: ``model_type`` -> where the heads live.

A head's output is its slice of the input to the attention output projection; that input has
shape ``[batch, seq, n_heads * head_dim]`` with head ``h`` in columns ``h*d:(h+1)*d`` for every
architecture below. Adding a model family means adding one row.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from kmshc.types import KmshcError


@dataclass(frozen=True)
class ArchSpec:
    layers: str           # dotted path from the CausalLM to the list of decoder blocks
    out_proj: str         # dotted path from one block to the attention output projection
    transposed: bool = False  # GPT-2's Conv1D stores weight as [in, out] instead of [out, in]


ARCHITECTURES: dict[str, ArchSpec] = {
    "llama": ArchSpec("model.layers", "self_attn.o_proj"),
    "mistral": ArchSpec("model.layers", "self_attn.o_proj"),
    "qwen2": ArchSpec("model.layers", "self_attn.o_proj"),
    "qwen3": ArchSpec("model.layers", "self_attn.o_proj"),
    "gemma": ArchSpec("model.layers", "self_attn.o_proj"),
    "gemma2": ArchSpec("model.layers", "self_attn.o_proj"),
    "olmo2": ArchSpec("model.layers", "self_attn.o_proj"),
    "phi3": ArchSpec("model.layers", "self_attn.o_proj"),
    "phi": ArchSpec("model.layers", "self_attn.dense"),
    "gpt2": ArchSpec("transformer.h", "attn.c_proj", transposed=True),
    "gptj": ArchSpec("transformer.h", "attn.out_proj"),
    "gpt_neox": ArchSpec("gpt_neox.layers", "attention.dense"),
    "opt": ArchSpec("model.decoder.layers", "self_attn.out_proj"),
}


def _get(obj: object, path: str) -> object:
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def arch_spec(model: nn.Module) -> ArchSpec:
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in ARCHITECTURES:
        raise KmshcError(
            f"unsupported architecture model_type={model_type!r}; supported: "
            f"{', '.join(sorted(ARCHITECTURES))}. Add a row to kmshc.engine.architectures.ARCHITECTURES.")
    return ARCHITECTURES[model_type]


def out_projections(model: nn.Module) -> list[nn.Module]:
    """The attention output projection of every layer, in layer order."""
    spec = arch_spec(model)
    return [_get(block, spec.out_proj) for block in _get(model, spec.layers)]


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    return _get(model, arch_spec(model).layers)


def head_shape(model: nn.Module) -> tuple[int, int]:
    """``(n_layers, n_query_heads)``. With grouped-query attention, query heads are counted."""
    arch_spec(model)
    n_layers = len(decoder_layers(model))
    n_heads = int(model.config.num_attention_heads)
    return n_layers, n_heads


def head_dim(model: nn.Module) -> int:
    proj = out_projections(model)[0]
    spec = arch_spec(model)
    width = proj.weight.shape[0] if spec.transposed else proj.weight.shape[1]
    return width // head_shape(model)[1]
