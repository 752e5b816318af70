"""Paired statistics over examples: bootstrap intervals, one-sided bootstrap p-values, McNemar.

All functions are pure: per-example outcomes in, numbers out. "Paired" means every mask is
resampled with the *same* example indices, so differences between masks keep their
correlation (a circuit and the circuit minus one head disagree on few examples).
"""
from __future__ import annotations

import math

import torch


def bootstrap_indices(n: int, n_boot: int, seed: int = 0) -> torch.Tensor:
    """``[n_boot, n]`` example indices drawn with replacement, reproducible from ``seed``."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, n, (n_boot, n), generator=g)


def bootstrap_means(values: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Resampled means ``[M, n_boot]`` of ``values`` ``[M, n]`` under shared indices ``idx`` ``[n_boot, n]``."""
    values = values.double()
    return torch.stack([values[:, row].mean(-1) for row in idx], dim=1)


def percentile_interval(samples: torch.Tensor, confidence: float = 0.95) -> tuple[float, float]:
    """Two-sided percentile interval of 1-D bootstrap ``samples``."""
    a = (1 - confidence) / 2
    q = torch.quantile(samples.double(), torch.tensor([a, 1 - a], dtype=torch.float64))
    return float(q[0]), float(q[1])


def one_sided_p_at_least(diff_samples: torch.Tensor) -> float:
    """Bootstrap p-value for H0 "the difference is >= 0" against "it is < 0".

    ``diff_samples`` ``[n_boot]``: resampled differences (e.g. ``S(C \\ {h}) - U``). The p-value
    is the share of resamples that still reach 0, with the +1 correction so it is never 0.
    """
    n = diff_samples.numel()
    return float((int((diff_samples >= 0).sum()) + 1) / (n + 1))


def mcnemar_p(a_correct: torch.Tensor, b_correct: torch.Tensor) -> float:
    """Two-sided exact McNemar p-value for paired 0/1 outcomes ``[n]`` of two masks.

    Only discordant examples count: ``b01`` (a wrong, b right) and ``b10``; under H0 each
    discordant example is a fair coin. Fractional outcomes (probe pairs) are rounded.
    """
    a, b = a_correct.round().long(), b_correct.round().long()
    n01 = int(((a == 0) & (b == 1)).sum())
    n10 = int(((a == 1) & (b == 0)).sum())
    n = n01 + n10
    if n == 0:
        return 1.0
    k = min(n01, n10)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return float(min(1.0, 2 * tail))


def zero_failure_bound(n_samples: int, confidence: float = 0.95) -> float:
    """Upper bound on the failing fraction when ``n_samples`` random draws all passed.

    Solves ``(1 - p)^n = 1 - confidence`` (the "rule of three" for n large: about 3/n at 95%).
    """
    if n_samples <= 0:
        return 1.0
    return float(1 - (1 - confidence) ** (1 / n_samples))
