"""Tiny randomly initialised causal LMs, built in-process, for tests and the ``tiny`` configs.

The tokenizer is a byte-level BPE trained in-process on the generators' vocabulary, so every
string tokenises, and common words (and the label words " True", " False", " A", " B") are one
token. Seeds make both the weights and the tokenizer reproducible.
"""
from __future__ import annotations

from functools import lru_cache

import torch

from kmshc.types import KmshcError

TINY_ARCHS = ("gpt2", "llama", "gpt_neox", "mistral", "qwen2", "qwen3", "gemma", "gemma2",
              "olmo2", "phi3", "phi", "gptj", "opt")


@lru_cache(maxsize=1)
def tiny_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from kmshc.tasks import arithmetic_task, grammar_task, word_problem_task
    corpus = [it.good for t in (grammar_task(n=400), arithmetic_task(n=300), word_problem_task(n=200))
              for it in t.items]
    corpus += ["Answer: True", "Answer: False", "Answer: A", "Answer: B"] * 50
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=512, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tk.train_from_iterator(corpus, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<|endoftext|>",
                                   eos_token="<|endoftext|>", pad_token="<|endoftext|>")


def tiny_config(arch: str, n_layers: int = 2, n_heads: int = 4, width: int = 64, vocab: int = 512):
    """A transformers config of ``arch`` with ``n_layers`` × ``n_heads`` heads (GQA where the family has it)."""
    from transformers import AutoConfig
    if arch not in TINY_ARCHS:
        raise KmshcError(f"unknown tiny architecture {arch!r}; expected one of {', '.join(TINY_ARCHS)}")
    common = dict(vocab_size=vocab, bos_token_id=0, eos_token_id=0, pad_token_id=0)
    if arch == "gpt2":
        return AutoConfig.for_model("gpt2", n_layer=n_layers, n_head=n_heads, n_embd=width, n_positions=128, **common)
    if arch == "gptj":
        return AutoConfig.for_model("gptj", n_layer=n_layers, n_head=n_heads, n_embd=width, n_positions=128,
                                    rotary_dim=8, **common)
    if arch == "gpt_neox":
        return AutoConfig.for_model("gpt_neox", num_hidden_layers=n_layers, num_attention_heads=n_heads,
                                    hidden_size=width, intermediate_size=2 * width, max_position_embeddings=128, **common)
    if arch == "opt":
        return AutoConfig.for_model("opt", num_hidden_layers=n_layers, num_attention_heads=n_heads, hidden_size=width,
                                    ffn_dim=2 * width, word_embed_proj_dim=width, max_position_embeddings=128, **common)
    if arch == "phi":
        return AutoConfig.for_model("phi", num_hidden_layers=n_layers, num_attention_heads=n_heads, hidden_size=width,
                                    intermediate_size=2 * width, max_position_embeddings=128, **common)
    kv = max(1, n_heads // 2)  # grouped-query attention: 2 query heads per KV head
    return AutoConfig.for_model(arch, num_hidden_layers=n_layers, num_attention_heads=n_heads, num_key_value_heads=kv,
                                hidden_size=width, intermediate_size=2 * width, head_dim=width // n_heads,
                                max_position_embeddings=128, **common)


def tiny_model(arch: str, n_layers: int = 2, n_heads: int = 4, width: int = 64, seed: int = 0,
               attn: str = "eager"):
    """Return ``(model, tokenizer)``: a random ``arch`` model in eval mode, reproducible from ``seed``."""
    from transformers import AutoModelForCausalLM
    tok = tiny_tokenizer()
    cfg = tiny_config(arch, n_layers, n_heads, width, vocab=len(tok))
    cfg._attn_implementation = attn
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(cfg)
    return model.eval(), tok
