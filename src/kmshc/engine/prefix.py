"""Prefix caching: run the layers that all masks share once, then start every masked forward there.

The residual stream entering decoder layer ``ℓ`` depends only on the gates of layers ``< ℓ``.
When ``M`` masks agree on those layers (a search varying heads in upper, macro-selected
layers), that stream is computed once on ``R`` rows and reused for the ``M·R`` masked rows,
and across calls for as long as the masks keep that prefix.

Masks that share less still share something: a circuit ``C`` and its removals ``C∖{h}`` agree
below ``h``'s layer. :func:`plan_splits` groups a call's masks by the layer where each first
differs from a reference mask; one prefix pass under the reference captures the stream entering
every such layer (:func:`streams_entering`), and each group starts at its own layer.

No modeling file is forked: the prefix run stops at a forward pre-hook on layer ``ℓ``; the
masked run makes layers ``< ℓ`` return their input (an instance ``forward`` restored in
``finally``) and swaps the cached stream in with a pre-hook on layer ``ℓ``. Rotary embeddings,
attention masks and absolute positions are still built by the model itself for the full
batch, so every architecture of :mod:`kmshc.engine.architectures` works unchanged.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
from torch import nn

from kmshc.engine.ablation import Ablation
from kmshc.engine.architectures import decoder_layers
from kmshc.engine.encoding import Batch
from kmshc.engine.hooks import gated
from kmshc.engine.memory import TensorLRU
from kmshc.engine.readout import final_hidden

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


def streams_entering(model: nn.Module, layers: Sequence[int], input_ids: torch.Tensor,
                     attention_mask: torch.Tensor) -> dict[int, torch.Tensor]:
    """The residual streams ``[R, T, F]`` entering each decoder layer of ``layers``, from ONE
    forward pass that stops before the deepest of them (layers ``≥`` it never run).

    Any hooks already on the model (e.g. :func:`kmshc.engine.hooks.gated`, :func:`start_at_layer`)
    apply to the layers that run. The captured tensors are the layers' inputs: decoder layers
    build new tensors for their outputs, so a later layer never changes an earlier capture.
    """
    wanted = sorted(set(layers))
    got: dict[int, torch.Tensor] = {}

    def make_capture(layer: int):
        def capture(module: nn.Module, args: tuple, kwargs: dict) -> None:
            got[layer] = _hidden_arg(args, kwargs)
            if layer == wanted[-1]:
                raise _ReachedLayer(got[layer])
        return capture

    blocks = decoder_layers(model)
    handles = [blocks[layer].register_forward_pre_hook(make_capture(layer), with_kwargs=True) for layer in wanted]
    try:
        model.base_model(input_ids=input_ids, attention_mask=attention_mask)
    except _ReachedLayer:
        return got
    finally:
        for h in handles:
            h.remove()
    raise RuntimeError(f"decoder layer {wanted[-1]} was never reached by the forward pass")


def hidden_entering(model: nn.Module, layer: int, input_ids: torch.Tensor,
                    attention_mask: torch.Tensor) -> torch.Tensor:
    """The residual stream ``[R, T, F]`` entering decoder ``layer``; layers ``≥ layer`` never run."""
    return streams_entering(model, [layer], input_ids, attention_mask)[layer]


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


def prefix_streams(model: nn.Module, batch: Batch, mask: torch.Tensor, ablation: Ablation, layers: Sequence[int],
                   start: int = 0, prefix: torch.Tensor | None = None) -> dict[int, torch.Tensor]:
    """The streams ``[R, T, F]`` entering each of ``layers`` under ``mask`` ``[L, H]`` (only its rows
    below each layer matter), from one prefix pass; with ``prefix`` (the stream entering ``start``
    under the same gates) the pass starts there instead of at the embeddings."""
    with gated(model, mask, ablation.values(batch, 1)):
        if prefix is None or start == 0:
            return streams_entering(model, layers, batch.input_ids, batch.attention_mask)
        with start_at_layer(model, start, prefix):
            return streams_entering(model, layers, batch.input_ids, batch.attention_mask)


@dataclass(frozen=True)
class SplitPlan:
    """How one call's masks run: mask ``i`` starts at layer ``starts[i]`` (0: a full forward),
    fed the stream entering that layer under the gates of mask ``reference``, which it shares
    below that layer. ``first`` is the lowest layer where the masks do not all agree (``L``: none)."""

    reference: int
    starts: torch.Tensor  # [M] long
    first: int


def plan_splits(masks: torch.Tensor, fallback: int) -> SplitPlan:
    """Group ``masks`` ``[M, L, H]`` by the prefix they share with a reference mask.

    The reference is the mask whose gate prefixes are shared by the most masks, summed over
    layers (ties: the earliest), i.e. the one that lets the stack skip the most layer-rows; it is
    ``masks[0]`` for a circuit followed by its single-head removals. Each other mask starts at
    the first layer where it differs from the reference. Masks equal to the reference start at
    the deepest of those layers (its stream is computed anyway), or at ``fallback`` when no mask
    differs from it (a single mask: the split layer of the previous call, whose prefix may be cached).
    """
    n_masks, n_layers = masks.shape[:2]
    flat = masks.flatten(2)
    # classes[l][i]: id of mask i's gates in layers 0..l; equal ids = equal prefixes
    classes = [torch.unique(flat[:, :l + 1].flatten(1), dim=0, return_inverse=True, return_counts=True)[1:]
               for l in range(n_layers)]
    shared_by = torch.stack([counts[inv] for inv, counts in classes], 1)  # [M, L]
    ref = int(shared_by.sum(1).argmax())
    shared = torch.stack([inv == inv[ref] for inv, _ in classes], 1).sum(1)  # [M] layers shared with ref
    differs = shared < n_layers
    deepest = int(shared[differs].max()) if differs.any() else fallback
    starts = torch.where(differs, shared, torch.full_like(shared, deepest))
    return SplitPlan(ref, starts, int(shared.min()))


def unique_masks(masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(keep [K], index [M])``: the first occurrence of each distinct mask of ``masks`` ``[M, L, H]``,
    in call order, and for every mask the position of its copy in ``masks[keep]``."""
    inverse = torch.unique(masks.flatten(1), dim=0, return_inverse=True)[1].cpu()
    positions = torch.arange(masks.shape[0])
    first = torch.full((int(inverse.max()) + 1,), masks.shape[0]).scatter_reduce(0, inverse, positions, "amin")
    order = first.argsort()
    where = torch.empty_like(order)
    where[order] = torch.arange(order.numel())
    return first[order], where[inverse]


class PrefixCache(TensorLRU):
    """LRU store of prefix streams keyed by (batch, layer, gates of layers below it), bounded in bytes."""

    @staticmethod
    def key(batch_key: tuple, layer: int, mask: torch.Tensor) -> tuple:
        """``mask`` ``[L, H]``: only its rows ``< layer`` enter the key (exact float bytes)."""
        return batch_key, layer, mask[:layer].detach().to("cpu", torch.float32).numpy().tobytes()
