"""Hard-concrete gates (Louizos et al., 2018), one per attention head. Torch only.

The module knows nothing about models: it holds ``log_alpha`` of shape ``[L, H]`` and turns it
into gate values in [0, 1] of the same shape.
"""
from __future__ import annotations

import math

import torch
from torch import nn


class HardConcreteGates(nn.Module):
    """``log_alpha``: ``[n_layers, n_heads]``; β = 2/3, γ = −0.1, ζ = 1.1 by default."""

    def __init__(self, n_layers: int, n_heads: int, init_log_alpha: float = 3.0,
                 beta: float = 2 / 3, gamma: float = -0.1, zeta: float = 1.1) -> None:
        super().__init__()
        if not (gamma < 0 < 1 < zeta) or beta <= 0:
            raise ValueError(f"need gamma < 0 < 1 < zeta and beta > 0, got {gamma=}, {zeta=}, {beta=}")
        self.beta, self.gamma, self.zeta = beta, gamma, zeta
        self.log_alpha = nn.Parameter(torch.full((n_layers, n_heads), float(init_log_alpha)))

    def sample(self, n: int | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """Stochastic training gates: ``[L, H]``, or ``[n, L, H]`` with one draw per row."""
        shape = self.log_alpha.shape if n is None else (n, *self.log_alpha.shape)
        u = torch.rand(shape, generator=generator, device=self.log_alpha.device).clamp(1e-6, 1 - 1e-6)
        s = torch.sigmoid((u.log() - (-u).log1p() + self.log_alpha) / self.beta)
        return (s * (self.zeta - self.gamma) + self.gamma).clamp(0.0, 1.0)

    def deterministic(self) -> torch.Tensor:
        """Test-time gates ``[L, H]``: ``clamp(σ(log_alpha)·(ζ−γ)+γ, 0, 1)``."""
        return (torch.sigmoid(self.log_alpha) * (self.zeta - self.gamma) + self.gamma).clamp(0.0, 1.0)

    def prob_open(self) -> torch.Tensor:
        """``P(gate > 0)`` per head, ``[L, H]``; its sum is the expected L0."""
        return torch.sigmoid(self.log_alpha - self.beta * math.log(-self.gamma / self.zeta))

    def expected_l0(self) -> torch.Tensor:
        """Expected number of open gates (a differentiable scalar)."""
        return self.prob_open().sum()

    def forward(self, n: int | None = None) -> torch.Tensor:
        return self.sample(n) if self.training else self.deterministic()
