"""Scoring circuits against a known mechanism: the toy model's induction circuit.

The reference circuit comes from attention diagnostics alone (:mod:`kmshc.engine.diagnostics`), never
from ablations or from any method under test: the previous-token heads of layer 0 and the
induction heads of layer 1, each above a fixed threshold. A found circuit is then scored by
precision and recall against it, and by whether it holds the mechanism at all (at least one
previous-token head and one induction head).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import torch

from kmshc.engine.diagnostics import HeadDiagnostics
from kmshc.search.common import mask_of, names
from kmshc.types import head_name

# A head is a previous-token (induction) head when at least this fraction of its attention
# goes to the previous token (to the token after the earlier occurrence). 0.3 is about twice
# what a head spreading its attention uniformly gets on the diagnostic sequences (0.18 for the
# previous-token score at period 10, 0.07 for induction); fixed before any circuit was scored.
PREV_THRESHOLD = 0.3
INDUCTION_THRESHOLD = 0.3


@dataclass(frozen=True)
class Reference:
    """The diagnostic ground truth: sorted head names of each role."""

    previous_token: tuple[str, ...]
    induction: tuple[str, ...]

    @property
    def heads(self) -> tuple[str, ...]:
        return self.previous_token + self.induction


def reference_circuit(diag: HeadDiagnostics, *, prev_layer: int = 0, induction_layer: int = 1,
                      prev_threshold: float = PREV_THRESHOLD,
                      induction_threshold: float = INDUCTION_THRESHOLD) -> Reference:
    """Previous-token heads of ``prev_layer`` and induction heads of ``induction_layer`` above threshold."""
    def role(scores: torch.Tensor, layer: int, threshold: float) -> tuple[str, ...]:
        return tuple(head_name(layer, h) for h in range(scores.shape[1]) if float(scores[layer, h]) >= threshold)
    return Reference(role(diag.previous_token, prev_layer, prev_threshold),
                     role(diag.induction, induction_layer, induction_threshold))


@dataclass(frozen=True)
class Agreement:
    """How a found circuit matches the reference."""

    precision: float           # |C ∩ R| / |C| (0 for an empty C)
    recall: float              # |C ∩ R| / |R|
    previous_token_heads: int  # reference previous-token heads in C
    induction_heads: int       # reference induction heads in C

    @property
    def has_mechanism(self) -> bool:
        return self.previous_token_heads >= 1 and self.induction_heads >= 1


def agreement(heads: Iterable[str], ref: Reference) -> Agreement:
    found, truth = set(heads), set(ref.heads)
    hit = found & truth
    return Agreement(precision=len(hit) / len(found) if found else 0.0,
                     recall=len(hit) / len(truth) if truth else 0.0,
                     previous_token_heads=len(found & set(ref.previous_token)),
                     induction_heads=len(found & set(ref.induction)))


def chance(ref: Reference, n_heads: int, size: int) -> tuple[float, float]:
    """``(expected precision, P(mechanism))`` of ``size`` heads drawn uniformly from ``n_heads``.

    The baseline a method must beat: when the reference holds most heads, a random circuit
    already has high precision, and only the mechanism check tells methods apart.
    """
    from math import comb
    p, i, total = len(ref.previous_token), len(ref.induction), comb(n_heads, size)
    miss_p, miss_i = comb(n_heads - p, size) / total, comb(n_heads - i, size) / total
    miss_both = comb(n_heads - p - i, size) / total
    return len(ref.heads) / n_heads, 1 - miss_p - miss_i + miss_both


def check_circuit(heads: Iterable[str], ref: Reference, min_precision: float) -> list[str]:
    """The ground-truth check as a list of failures (empty: passed)."""
    a, heads = agreement(heads, ref), sorted(heads)
    failures = []
    if a.previous_token_heads < 1:
        failures.append(f"no previous-token head of {list(ref.previous_token)} in {heads}")
    if a.induction_heads < 1:
        failures.append(f"no induction head of {list(ref.induction)} in {heads}")
    if a.precision < min_precision:
        failures.append(f"precision {a.precision:.2f} < {min_precision} ({heads} against {list(ref.heads)})")
    return failures


@dataclass(frozen=True)
class SingleAblation:
    """Accuracy with every head (``full``), with none (``empty``), and without each head in turn."""

    full: float
    empty: float
    without: dict[str, float]

    def redundant(self, heads: Iterable[str], tolerance: float) -> list[str]:
        """Heads of ``heads`` whose removal alone costs less than ``tolerance`` accuracy."""
        return [h for h in heads if self.full - self.without[h] < tolerance]


def single_ablation(accuracy, shape: tuple[int, int]) -> SingleAblation:
    """``accuracy``: masks ``[M, L, H]`` -> ``[M]`` accuracies (e.g. ``Scorer.outcomes(m).accuracy``)."""
    n = shape[0] * shape[1]
    masks = torch.stack([mask_of(range(n), shape), mask_of([], shape)]
                        + [mask_of([i for i in range(n) if i != j], shape) for j in range(n)])
    acc = [float(a) for a in accuracy(masks)]
    return SingleAblation(full=acc[0], empty=acc[1], without=dict(zip(names(range(n), shape), acc[2:])))
