"""How much work fits in memory: rows per forward pass and tokens per logits chunk.

Sized from the memory free *now* (CUDA: ``mem_get_info``; CPU: ``MemAvailable``), so a shared
machine gets smaller chunks. Chunk sizes change speed only, never results.
"""
from __future__ import annotations

import os
import resource
from collections import OrderedDict
from typing import Hashable

import torch
from torch import nn

from kmshc.engine.device import model_devices

FALLBACK_BYTES = 2 << 30


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def available_bytes(device: torch.device | str = "cpu") -> int:
    """Free memory on ``device`` in bytes (a 2 GiB guess when the system will not say)."""
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return FALLBACK_BYTES


def _param(model: nn.Module) -> torch.Tensor:
    return next(model.parameters())


def free_bytes(model: nn.Module) -> int:
    """Free memory on the tightest of the devices the model computes on (one, unless ``device_map``)."""
    return min(available_bytes(d) for d in model_devices(model))


def row_bytes(model: nn.Module, seq_len: int) -> int:
    """Rough peak activation bytes of one sequence row in one forward pass.

    A few copies of the residual width, the MLP's intermediate activations and the attention
    scores (``H·T`` per token, for eager attention) per token.
    """
    cfg = model.config
    width = int(getattr(cfg, "hidden_size", 0) or getattr(cfg, "n_embd", 0) or 1024)
    inter = int(getattr(cfg, "intermediate_size", 0) or getattr(cfg, "ffn_dim", 0) or 4 * width)
    heads = int(getattr(cfg, "num_attention_heads", 0) or getattr(cfg, "n_head", 0) or 16)
    per_token = 10 * width + 4 * inter + 2 * heads * seq_len
    return seq_len * per_token * _param(model).element_size()


def rows_per_forward(model: nn.Module, seq_len: int, fraction: float = 0.25, floor: int = 16,
                     cap: int = 4096) -> int:
    """How many rows one forward may carry: ``fraction`` of free memory, within ``[floor, cap]``."""
    budget = free_bytes(model) * fraction
    return int(max(floor, min(cap, budget // max(1, row_bytes(model, seq_len)))))


def logits_chunk_tokens(model: nn.Module, fraction: float = 0.05, floor: int = 64, cap: int = 4096) -> int:
    """Tokens per logits chunk: float32 logits plus two temporaries of vocabulary width."""
    vocab = int(getattr(model.config, "vocab_size", 50000))
    budget = free_bytes(model) * fraction
    return int(max(floor, min(cap, budget // (3 * 4 * vocab))))


class TensorLRU:
    """LRU store of tensors bounded by ``max_bytes``; an entry larger than the bound is not stored.

    Used wherever a cache would otherwise grow with every batch (prefix streams, resample values):
    training reshuffles its batches each epoch, so an unbounded per-batch cache grows every step.
    """

    def __init__(self, max_bytes: int = 256 << 20) -> None:
        self.max_bytes, self.bytes = max_bytes, 0
        self._store: OrderedDict[Hashable, torch.Tensor] = OrderedDict()
        self.hits = self.misses = 0

    def get(self, key: Hashable) -> torch.Tensor | None:
        value = self._store.get(key)
        if value is None:
            self.misses += 1
            return None
        self.hits += 1
        self._store.move_to_end(key)
        return value

    def put(self, key: Hashable, value: torch.Tensor) -> None:
        size = value.numel() * value.element_size()
        if size > self.max_bytes or key in self._store:
            return
        while self.bytes + size > self.max_bytes and self._store:
            _, old = self._store.popitem(last=False)
            self.bytes -= old.numel() * old.element_size()
        self._store[key] = value
        self.bytes += size

    def clear(self) -> None:
        self._store.clear()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._store)
