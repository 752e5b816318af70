"""Interventions on head outputs, as forward pre-hooks on the attention output projection.

Every hook lives inside a context manager and is removed in ``finally``, so an exception in
the forward pass never leaves a model altered. No modeling file is forked and ``head_mask``
is never used (SDPA kernels ignore it).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Sequence

import torch
from torch import nn

from kmshc.engine.architectures import head_shape, out_projections
from kmshc.engine.cost import RowCount

LayerValues = Sequence[torch.Tensor | None]


@contextmanager
def _pre_hooks(model: nn.Module, make_hook) -> Iterator[None]:
    """Register ``make_hook(layer)`` on every layer's output projection; remove them all in ``finally``."""
    handles = []
    try:
        for layer, proj in enumerate(out_projections(model)):
            handles.append(proj.register_forward_pre_hook(make_hook(layer)))
        yield
    finally:
        for h in handles:
            h.remove()


def _check_gates(gates: torch.Tensor, n_layers: int, n_heads: int) -> None:
    if gates.dim() not in (2, 3) or tuple(gates.shape[-2:]) != (n_layers, n_heads):
        raise ValueError(f"gates must have shape [L, H] or [batch, L, H] with L={n_layers}, "
                         f"H={n_heads}; got {tuple(gates.shape)}")


@contextmanager
def gated(model: nn.Module, gates: torch.Tensor, ablation: LayerValues | None = None) -> Iterator[nn.Module]:
    """Replace each head's output ``z`` by ``g·z + (1−g)·a`` for the duration of the block.

    Args:
        gates: ``[L, H]`` (one mask for the whole batch) or ``[B, L, H]`` (one mask per batch
            row; ``B`` must equal the model's batch size). 1 keeps a head, 0 ablates it.
            Gates and ablation values may sit on any device: each layer's hook moves them to
            that layer's activations (a ``device_map`` model computes layers on several devices).
        ablation: per-layer ablation values ``a``, each broadcastable to ``[B, T, H, d]``
            (``[H, d]``, ``[T, H, d]`` or ``[B, T, H, d]``), or ``None`` for zero ablation.
    """
    n_layers, n_heads = head_shape(model)
    _check_gates(gates, n_layers, n_heads)
    if ablation is not None and len(ablation) != n_layers:
        raise ValueError(f"ablation must hold one entry per layer ({n_layers}), got {len(ablation)}")
    # A layer whose gates are all exactly 1 is left untouched (lerp would return z bitwise
    # anyway); not when the gates carry gradients, which must still flow through them.
    untouched = ([False] * n_layers if gates.requires_grad
                 else (gates == 1).reshape(-1, n_layers, n_heads).all(-1).all(0).tolist())
    cast: dict = {}  # per (layer, dtype, device): the gates in the activations' dtype, cast once

    def make_hook(layer: int):
        def hook(module: nn.Module, args: tuple) -> tuple | None:
            x = args[0]
            b, t, width = x.shape
            g = gates[..., layer, :]  # [H] or [B, H]
            if g.dim() == 2 and g.shape[0] not in (1, b):
                raise ValueError(f"gates carry {g.shape[0]} rows but the batch has {b}")
            if untouched[layer]:
                return None
            z = x.view(b, t, n_heads, width // n_heads)
            key = (layer, x.dtype, x.device)
            if gates.requires_grad or key not in cast:
                cast[key] = g.to(dtype=x.dtype, device=x.device).reshape(-1, 1, n_heads, 1)
            g = cast[key]
            a = None if ablation is None else ablation[layer]
            if a is None:
                out = z * g
            else:
                a = a[..., :t, :, :] if a.dim() >= 3 else a
                # lerp is exact at g = 1 and g = 0, so all-ones gates reproduce the model bitwise.
                # to(): a model spread over devices computes each layer on its own device
                out = torch.lerp(a.to(device=x.device, dtype=x.dtype).expand_as(z), z, g.expand_as(z))
            return (out.reshape(b, t, width), *args[1:])
        return hook

    with _pre_hooks(model, make_hook):
        yield model


@contextmanager
def capture_head_outputs(model: nn.Module, store: list) -> Iterator[list]:
    """Append, per forward pass, a list of per-layer head outputs ``[B, T, H, d]`` to ``store``.

    Used to fit mean ablations and to compute resample ablations. Tensors are detached.
    """
    n_layers, n_heads = head_shape(model)
    current: list[torch.Tensor | None] = [None] * n_layers

    def make_hook(layer: int):
        def hook(module: nn.Module, args: tuple) -> None:
            x = args[0]
            b, t, width = x.shape
            current[layer] = x.detach().view(b, t, n_heads, width // n_heads)
            if layer == n_layers - 1:
                store.append(list(current))
        return hook

    with _pre_hooks(model, make_hook):
        yield store


@contextmanager
def count_rows(model: nn.Module, count: RowCount) -> Iterator[RowCount]:
    """Add to ``count`` every row the model really runs while the block is open (:mod:`kmshc.engine.cost`).

    A forward hook on each layer's attention output projection counts the rows ``B`` of its
    output ``[B, T, F]``: layers skipped by a prefix start, or never reached by a prefix run, do
    not run it and are not counted. When that output carries gradients, a tensor hook counts the
    backward pass when it reaches the layer (also after the block has closed). A hook on the
    output embeddings counts the positions at which vocabulary logits are formed.
    """
    projections = out_projections(model)
    last = len(projections) - 1
    handles = []

    def make_hook(layer: int):
        def hook(module: nn.Module, args: tuple, out: torch.Tensor) -> None:
            count.add_forward(out.shape[0], layer == last)
            if out.requires_grad:
                out.register_hook(lambda grad: count.add_backward(grad.shape[0]))
        return hook

    def logits_hook(module: nn.Module, args: tuple, out: torch.Tensor) -> None:
        count.add_logits(out.shape[:-1].numel())

    try:
        for layer, proj in enumerate(projections):
            handles.append(proj.register_forward_hook(make_hook(layer)))
        head = model.get_output_embeddings()
        if head is not None:
            handles.append(head.register_forward_hook(logits_hook))
        yield count
    finally:
        for h in handles:
            h.remove()
