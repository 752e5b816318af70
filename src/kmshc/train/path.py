"""A regularisation path at the end of gate training: the L0 weight grows step by step until
almost every gate has closed, and the order in which heads close ranks them.

Why: after the main phase the needed gates saturate (``log_alpha`` around 5, a sampled gate of
exactly 1.0), where neither the task loss nor the L0 term has a gradient, so their ``log_alpha``
order is the noise of the first steps. The path first levels every open head to the same
``log_alpha`` (:func:`level`), then raises ``λ`` geometrically (:func:`path_lambda`); a head
stays open as long as the task loss still needs it at that price, so the last heads to close are
the ones the smaller circuits need. :class:`PathRecord` keeps, for each head, the last path step
at which it was open; :meth:`PathRecord.order` turns that into a ranking of every head.
"""
from __future__ import annotations

import torch
from torch import nn

from kmshc.types import head_name


def path_lambda(step: int, start: int, lam: float, growth: float) -> float:
    """``λ`` at ``step`` of a path that starts at step ``start``: ``lam·growth^(step − start)``
    (``lam`` before it)."""
    return lam * growth ** max(0, step - start)


def level(log_alpha: torch.Tensor, value: float) -> None:
    """Lower every ``log_alpha`` above ``value`` to it, in place (``[L, H]``)."""
    with torch.no_grad():
        log_alpha.clamp_(max=value)


class PathRecord(nn.Module):
    """``last_open`` ``[L, H]``: the last path step at which each head was open (``-1``: never on the
    path); ``start_log_alpha`` ``[L, H]``: ``log_alpha`` when the path began. Buffers, so a resumed
    run keeps them."""

    def __init__(self, n_layers: int, n_heads: int) -> None:
        super().__init__()
        self.register_buffer("last_open", torch.full((n_layers, n_heads), -1, dtype=torch.long))
        self.register_buffer("start_log_alpha", torch.zeros(n_layers, n_heads))

    def begin(self, log_alpha: torch.Tensor) -> None:
        """Keep ``log_alpha`` ``[L, H]`` as the path starts (before :func:`level`): it ranks the heads
        the path never opens, whose own ``log_alpha`` the rising penalty then crowds together."""
        self.start_log_alpha.copy_(log_alpha.detach().to(self.start_log_alpha))

    def update(self, open_mask: torch.Tensor, step: int) -> None:
        """Record the heads open (``open_mask`` ``[L, H]`` bool) after path step ``step``."""
        self.last_open[open_mask.to(self.last_open.device)] = step

    def order(self, log_alpha: torch.Tensor) -> list[int]:
        """Every head (flat index), most important first: the later a head was last open the
        higher it ranks, heads open equally late by ``log_alpha`` (``[L, H]``, now); then the heads
        never open on the path, by their ``log_alpha`` when it began."""
        last = self.last_open.flatten().tolist()
        now = log_alpha.detach().flatten().tolist()
        start = self.start_log_alpha.flatten().tolist()
        return sorted(range(len(last)), key=lambda i: (-last[i], -(now[i] if last[i] >= 0 else start[i]), i))

    def head_names(self, log_alpha: torch.Tensor) -> list[str]:
        """:meth:`order` as head names (``L{l}H{h}``)."""
        n_heads = self.last_open.shape[1]
        return [head_name(i // n_heads, i % n_heads) for i in self.order(log_alpha)]
