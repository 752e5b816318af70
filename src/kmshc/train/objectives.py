"""Training objectives for head gates, as pure functions, plus the sparsity controllers.

Faithfulness terms, each a scalar mean over the batch:

* :func:`pair_margin_loss`: ``softplus(−(log p(good) − log p(bad)))`` for minimal pairs;
* :func:`label_ce_loss`: cross-entropy over the label tokens' logits;
* :func:`kl_from_full`: KL(full model ‖ circuit) of the next-token distribution at scored positions;
* :func:`probe_ce_loss`: cross-entropy through a probe fitted once on the full model.

Sparsity terms: :func:`l0_penalty` (``λ·E[L0]``) and :class:`LagrangianSparsity`
(``λ1·(ŝ−t) + λ2·(ŝ−t)²`` with multipliers trained by gradient *ascent*, Edge Pruning style)
with a linearly ramped target from :func:`ramped_target`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kmshc.engine.probe import Probe

FAITHFULNESS = ("task", "kl", "probe")
SPARSITY = ("l0", "lagrangian")


def pair_margin_loss(lp_good: torch.Tensor, lp_bad: torch.Tensor) -> torch.Tensor:
    """Mean ``softplus(−(lp_good − lp_bad))`` over pairs; ``lp_good``, ``lp_bad``: ``[B]``."""
    return F.softplus(-(lp_good.float() - lp_bad.float())).mean()


def label_ce_loss(label_logits: torch.Tensor, gold: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the label tokens only: ``label_logits`` ``[B, K]``, ``gold`` ``[B]``."""
    return F.cross_entropy(label_logits.float(), gold)


def kl_from_full(logits: torch.Tensor, full_logits: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``KL(p_full ‖ p_circuit)`` per scored position, averaged with ``weight``.

    ``logits``/``full_logits``: ``[R, P, V]`` (circuit / full model); ``weight``: ``[R, P]``
    (1 at scored positions, 0 at padding). Returns a scalar.
    """
    logq = logits.float().log_softmax(-1)
    logp = full_logits.float().log_softmax(-1)
    kl = (logp.exp() * (logp - logq)).sum(-1)  # [R, P]
    w = weight.to(kl.dtype)
    return (kl * w).sum() / w.sum().clamp(min=1.0)


def probe_ce_loss(probe: Probe, features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of a fixed probe on features ``[R, F]`` with class targets ``[R]``."""
    return F.cross_entropy(probe.logits(features.float()), target)


def l0_penalty(expected_l0: torch.Tensor, lam: float) -> torch.Tensor:
    """``λ·E[L0]``, with ``E[L0]`` the expected number of open gates (a count, not a fraction)."""
    return lam * expected_l0


def ramped_target(step: int, warmup_steps: int, start: float, end: float) -> float:
    """Linear ramp from ``start`` (step 0) to ``end`` (step ≥ ``warmup_steps``)."""
    if warmup_steps <= 0:
        return end
    frac = min(1.0, max(0.0, step / warmup_steps))
    return start + (end - start) * frac


def target_fraction(target: float, n_total: int) -> float:
    """A target given as a head count (> 1) or a fraction (≤ 1) -> a fraction of ``n_total``."""
    if target < 0 or (target > 1 and target > n_total):
        raise ValueError(f"sparsity target must be a fraction in [0, 1] or a head count in 1..{n_total}, got {target}")
    return target / n_total if target > 1 else float(target)


class LagrangianSparsity(nn.Module):
    """Target-size controller ``λ1·(ŝ−t) + λ2·(ŝ−t)²`` on the expected open fraction ``ŝ``.

    ``λ1`` and ``λ2`` start at 0 and are maximised: the training loop flips the sign of their
    gradients (:meth:`flip_gradients`) so that one minimising optimizer does descent on the
    gates and ascent on the multipliers. ``λ1`` then grows while the circuit is too large and
    shrinks when it undershoots; ``λ2`` only grows and damps oscillation around the target.
    """

    def __init__(self) -> None:
        super().__init__()
        self.lambda1 = nn.Parameter(torch.zeros(()))
        self.lambda2 = nn.Parameter(torch.zeros(()))

    def forward(self, s_hat: torch.Tensor, target: float) -> torch.Tensor:
        """``s_hat``: expected open fraction (a differentiable scalar); ``target``: a fraction."""
        gap = s_hat - target
        return self.lambda1 * gap + self.lambda2 * gap * gap

    def flip_gradients(self) -> None:
        """Turn the descent step on the multipliers into an ascent step (call after backward)."""
        for p in self.parameters():
            if p.grad is not None:
                p.grad.neg_()
