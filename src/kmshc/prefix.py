"""Prefix caching: run the layers that all masks share once, then start every masked forward there.

The residual stream entering decoder layer ``ℓ`` depends only on the gates of layers ``< ℓ``.
When ``M`` masks agree on those layers (a search varying heads in upper, macro-selected
layers), that stream is computed once on ``R`` rows and reused for the ``M·R`` masked rows,
and across calls for as long as the masks keep that prefix.

No modeling file is forked: the prefix run stops at a forward pre-hook on layer ``ℓ``; the
masked run makes layers ``< ℓ`` return their input (an instance ``forward`` restored in
``finally``) and swaps the cached stream in with a pre-hook on layer ``ℓ``. Rotary embeddings,
attention masks and absolute positions are still built by the model itself for the full
batch, so every architecture of :mod:`kmshc.architectures` works unchanged.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

from kmshc.ablation import Ablation
from kmshc.architectures import decoder_layers
from kmshc.encoding import Batch
from kmshc.hooks import gated
from kmshc.memory import TensorLRU
from kmshc.readout import final_hidden

_MISSING = object()


class _ReachedLayer(Exception):
    """Raised by the capture hook to stop a prefix run once the wanted stream is in hand."""

    def __init__(self, hidden: torch.Tensor) -> None:
        super().__init__("prefix captured")
        self.hidden = hidden


def _hidden_arg(args: tuple, kwargs: dict) -> torch.Tensor:
    return args[0] if args else kwargs["hidden_states"]


def first_differing_layer(masks: torch.Tensor) -> int:
    """The lowest layer whose gates are not identical across ``masks`` ``[M, L, H]``; ``L`` if none."""
    differs = (masks != masks[:1]).flatten(2).any(-1).any(0)  # [L]
    idx = differs.nonzero()
    return int(idx[0]) if idx.numel() else masks.shape[1]


def hidden_entering(model: nn.Module, layer: int, input_ids: torch.Tensor,
                    attention_mask: torch.Tensor) -> torch.Tensor:
    """The residual stream ``[R, T, F]`` entering decoder ``layer``; layers ``≥ layer`` never run.

    Any hooks already on the model (e.g. :func:`kmshc.hooks.gated`) apply to the layers that run.
    """
    def capture(module: nn.Module, args: tuple, kwargs: dict) -> None:
        raise _ReachedLayer(_hidden_arg(args, kwargs))

    handle = decoder_layers(model)[layer].register_forward_pre_hook(capture, with_kwargs=True)
    try:
        model.base_model(input_ids=input_ids, attention_mask=attention_mask)
    except _ReachedLayer as stop:
        return stop.hidden
    finally:
        handle.remove()
    raise RuntimeError(f"decoder layer {layer} was never reached by the forward pass")


@contextmanager
def start_at_layer(model: nn.Module, layer: int, hidden: torch.Tensor) -> Iterator[nn.Module]:
    """Inside the block, forward passes skip layers ``< layer`` and feed ``hidden`` into ``layer``.

    ``hidden`` is ``[R, T, F]``; a batch of ``M·R`` rows gets it repeated ``M`` times
    (mask-major, as in :func:`gated_hidden`). Embeddings still run (cheap) so the
    model builds its own attention masks and position embeddings for the full batch.
    """
    layers = decoder_layers(model)
    if not 0 <= layer < len(layers):
        raise ValueError(f"layer must be in [0, {len(layers)}), got {layer}")

    def skip(*args, **kwargs):
        return _hidden_arg(args, kwargs)  # every supported decoder layer returns a bare tensor (v5)

    def feed(module: nn.Module, args: tuple, kwargs: dict):
        x = _hidden_arg(args, kwargs)
        if x.shape[0] % hidden.shape[0] or x.shape[1:] != hidden.shape[1:]:
            raise ValueError(f"cached prefix {tuple(hidden.shape)} does not fit the batch {tuple(x.shape)}")
        reps = x.shape[0] // hidden.shape[0]
        h = hidden.to(device=x.device, dtype=x.dtype)
        h = h.repeat(reps, 1, 1) if reps > 1 else h
        if args:
            return (h, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": h}

    saved = [(blk, blk.__dict__.get("forward", _MISSING)) for blk in layers[:layer]]
    handle = None
    try:
        for blk, _ in saved:
            blk.forward = skip
        handle = layers[layer].register_forward_pre_hook(feed, with_kwargs=True)
        yield model
    finally:
        for blk, old in saved:
            if old is _MISSING:
                blk.__dict__.pop("forward", None)
            else:
                blk.forward = old
        if handle is not None:
            handle.remove()


def gated_hidden(model: nn.Module, batch: Batch, masks: torch.Tensor, ablation: Ablation,
                 start_layer: int = 0, prefix: torch.Tensor | None = None) -> torch.Tensor:
    """Final hidden states for ``M`` masks at once: ``[M·R, T, F]``. ``masks``: ``[M, L, H]``.

    With ``prefix`` (the stream ``[R, T, F]`` entering ``start_layer``, computed under gates
    that all ``masks`` share below that layer), layers ``< start_layer`` are skipped.
    """
    m, r = masks.shape[0], batch.input_ids.shape[0]
    masks = masks.to(batch.input_ids.device)  # one copy; hooks move gates on to each layer's device
    ids = batch.input_ids.repeat(m, 1)
    att = batch.attention_mask.repeat(m, 1)
    gates = masks.repeat_interleave(r, dim=0) if m > 1 else masks[0]
    with gated(model, gates, ablation.values(batch, m)):
        if prefix is None or start_layer == 0:
            return final_hidden(model, ids, att)
        with start_at_layer(model, start_layer, prefix):
            return final_hidden(model, ids, att)


def prefix_hidden(model: nn.Module, batch: Batch, mask: torch.Tensor, ablation: Ablation, layer: int) -> torch.Tensor:
    """The stream ``[R, T, F]`` entering ``layer`` under ``mask`` ``[L, H]`` (only rows ``< layer`` matter)."""
    with gated(model, mask, ablation.values(batch, 1)):
        return hidden_entering(model, layer, batch.input_ids, batch.attention_mask)



class PrefixCache(TensorLRU):
    """LRU store of prefix streams keyed by (batch, layer, gates of layers below it), bounded in bytes."""

    @staticmethod
    def key(batch_key: tuple, layer: int, mask: torch.Tensor) -> tuple:
        """``mask`` ``[L, H]``: only its rows ``< layer`` enter the key (exact float bytes)."""
        return batch_key, layer, mask[:layer].detach().to("cpu", torch.float32).numpy().tobytes()
