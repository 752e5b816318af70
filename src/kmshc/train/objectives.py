"""Training objectives for head gates, as pure functions, plus the sparsity controllers.

Faithfulness terms, each a scalar mean over the batch:

* :func:`pair_margin_loss`: ``softplus(−(log p(good) − log p(bad)))`` for minimal pairs;
* :func:`label_ce_loss`: cross-entropy over the label tokens' logits;
* :func:`margin_match_loss`: the circuit's mean margin over the batch asked to equal the full model's;
* :func:`kl_from_full`: KL(full model ‖ circuit) of the next-token distribution at scored positions;
* :func:`probe_ce_loss`: cross-entropy through a probe fitted once on the full model.

Sparsity terms: :func:`l0_penalty` (``λ·E[L0]``) and :class:`LagrangianSparsity`, which brings
the circuit the run reports to a target head count: ``λ1·(ŝ−t) + λ2·(ŝ−t)²`` with a ramped target
(:func:`ramped_target`) and multipliers raised by dual ascent on the reported count's gap, then a
settle phase (:func:`settle_penalty`).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from kmshc.engine.probe import Probe
from kmshc.train.gates import HardConcreteGates

FAITHFULNESS = ("task", "match", "kl", "probe")
SPARSITY = ("l0", "lagrangian")


def pair_margin_loss(lp_good: torch.Tensor, lp_bad: torch.Tensor) -> torch.Tensor:
    """Mean ``softplus(−(lp_good − lp_bad))`` over pairs; ``lp_good``, ``lp_bad``: ``[B]``."""
    return F.softplus(-(lp_good.float() - lp_bad.float())).mean()


def margin_match_loss(margin: torch.Tensor, full_margin: torch.Tensor) -> torch.Tensor:
    """``(mean(margin) − mean(full_margin))²``: the circuit's mean margin over the batch asked to equal
    the full model's; ``margin``, ``full_margin``: ``[n]``, the circuit's and the full model's.

    Why not the task loss: ``softplus(−margin)`` keeps falling as the margin grows, so heads that
    push the margin past the full model's are kept as if they were needed, and the circuit
    overshoots. Why the mean, not each example's margin: the search and the certificate judge the
    mean; matching every example keeps the many heads that each move a few examples (on IOI,
    SmolLM2 kept 153 of 270 heads at λ = 0.03, against 31 for the task loss).
    """
    return (margin.float().mean() - full_margin.float().mean()).pow(2)


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


SETTLE_MARGIN = 0.5  # log α each side of the threshold in the settle phase: a clear gap, and still quick to cross


def threshold_log_alpha(gates: HardConcreteGates, gate_threshold: float) -> float:
    """The ``log_alpha`` at which the deterministic gate equals ``gate_threshold`` (0 for 0.5)."""
    q = (gate_threshold - gates.gamma) / (gates.zeta - gates.gamma)
    return math.log(q / (1 - q))


def settle_penalty(log_alpha: torch.Tensor, k: int, cut: float) -> torch.Tensor:
    """Rank hinge that leaves exactly ``k`` heads above ``cut``: the ``k`` largest ``log_alpha`` are
    pushed up to ``cut + SETTLE_MARGIN``, every other one down to ``cut − SETTLE_MARGIN``.

    Weight 1 per head and unit of ``log_alpha``: far above a task gradient on one gate, so the
    optimizer moves exactly the heads on the wrong side of the cut. The order is taken afresh each
    step; heads already on their side and clear of the margin feel nothing.
    """
    la = log_alpha.flatten()
    top = torch.zeros_like(la, dtype=torch.bool)
    top[la.detach().topk(k).indices] = True
    return torch.where(top, F.relu(cut + SETTLE_MARGIN - la), F.relu(la - cut + SETTLE_MARGIN)).sum()


class LagrangianSparsity(nn.Module):
    """Bring the circuit the run reports (heads whose deterministic gate exceeds ``gate_threshold``)
    to ``target`` heads.

    Main phase: ``λ1·(ŝ−t) + λ2·(ŝ−t)²`` on the expected open fraction ``ŝ = E[L0]/N`` (the
    differentiable handle on the gates), ``t`` ramped from all heads to ``target`` over
    ``warmup_steps``. Before each step the multipliers take a plain dual-ascent step on the gap
    ``e = n/N − t`` of the *reported* count ``n``: ``λ1 += lambda_lr·e``, ``λ2 += lambda_lr·e²``.
    Each of the following fixes a failure seen on short schedules (lr 0.2, ``log_alpha`` from 1,
    150–300 steps) on tiny Llamas and simulated 270-head runs:

    * the count, not ``E[L0]``: while gates cross the threshold the two differ by many heads
      (``E[L0]`` counts a gate at the threshold as 0.83 open), and a controller that holds
      ``E[L0]`` at the target ends with fewer heads than asked;
    * a step proportional to the gap, not Adam's fixed-size step: Adam moves ``λ1`` by its
      learning rate per step however small the gap, so ``λ1`` winds up while the gates lag the
      ramp and overshoots once they catch up;
    * anti-windup: ``λ1`` restarts from 0 whenever ``e`` changes sign, so the integral gathered
      while the circuit was too large does not keep closing gates once it is too small (a gate
      closed for long gets almost no gradient and reopens slowly).

    Settle phase (from step ``settle_from`` on, see :meth:`forward`): :func:`settle_penalty` puts
    exactly ``round(target·N)`` heads above the threshold, the ones with the largest ``log_alpha``.
    The main phase alone mostly lands within ±10% on the tiny Llamas, but on the simulated runs it
    stops well above small targets (15 heads for 5) when more heads than that are strongly needed:
    their gates sit at large ``log_alpha``, where the E[L0] gradient vanishes. Pruning those by the
    learned order kept circuits about as faithful there as the true top heads.
    """

    def __init__(self, target: float, *, warmup_steps: int, lambda_lr: float, gate_threshold: float) -> None:
        super().__init__()
        self.target, self.warmup_steps, self.lambda_lr = target, warmup_steps, lambda_lr
        self.gate_threshold = gate_threshold
        self.register_buffer("lambda1", torch.zeros(()))
        self.register_buffer("lambda2", torch.zeros(()))
        self.register_buffer("gap", torch.zeros(()))  # the last gap, for the reset on a sign change

    def target_at(self, step: int) -> float:
        """The target fraction at ``step`` (ramped from 1.0 over the warm-up)."""
        return ramped_target(step, self.warmup_steps, 1.0, self.target)

    def forward(self, gates: HardConcreteGates, step: int, settle_from: int | None = None) -> torch.Tensor:
        """The penalty at ``step``; from ``settle_from`` on (if given), the settle phase."""
        n_total = gates.log_alpha.numel()
        if settle_from is not None and step >= settle_from:
            k = round(self.target * n_total)
            return settle_penalty(gates.log_alpha, k, threshold_log_alpha(gates, self.gate_threshold))
        t = self.target_at(step)
        n_open = int((gates.deterministic().detach() > self.gate_threshold).sum())
        e = (n_open - t * n_total) / n_total
        e = 0.0 if abs(e) < 1e-9 else e  # a count on the target (up to rounding) crosses nothing
        with torch.no_grad():
            if e * float(self.gap) < 0:  # anti-windup: the count crossed the target
                self.lambda1.zero_()
            self.lambda1 += self.lambda_lr * e
            self.lambda2 += self.lambda_lr * e * e
            if e != 0:
                self.gap.fill_(e)
        gap = gates.expected_l0() / n_total - t
        return self.lambda1 * gap + self.lambda2 * gap * gap
