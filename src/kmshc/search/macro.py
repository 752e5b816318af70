"""Macro layer search (the search's step 1): which layers matter, from sliding-window ablations.

A window of ``w`` consecutive layers is switched off (all its heads ablated) and scored. The
paper's per-layer drop is ``Δℓ = S(M) − max`` over the windows containing ℓ (equivalently the
*min* over those windows of ``S(M) − S(M \\ window)``), and the layers with ``Δℓ`` at or above
the 75th percentile (ties kept) form the candidate set.

Edge bias: only full windows exist, so layer 0 lies in one window while a middle layer lies in
``w``; a max over fewer windows is lower, so edge drops read higher and edge layers are picked
more often. The corrected drop averages the window drops over the windows containing ℓ
(per-layer normalisation by coverage), which has no such small-sample bias. Both are reported.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch

from kmshc.search.common import allowed_heads, mask_of
from kmshc.search.settings import DEFAULTS
from kmshc.search.state import Recorder
from kmshc.types import KmshcError


@dataclass(frozen=True)
class MacroResult:
    """``window_scores[s]``: ``S(M \\ layers s..s+w−1)``; ``drops``/``drops_corrected``: ``[L]``;
    ``layers``: the selection used (corrected or not, per ``edge_correction``)."""

    window: int
    full: float
    window_scores: tuple[float, ...]
    drops: tuple[float, ...]
    drops_corrected: tuple[float, ...]
    layers_paper: tuple[int, ...]
    layers_corrected: tuple[int, ...]
    percentile: float
    edge_correction: bool
    evaluations: int

    @property
    def layers(self) -> tuple[int, ...]:
        return self.layers_corrected if self.edge_correction else self.layers_paper


def window_size(n_layers: int, window: int | None = None, fraction: float = 0.2) -> int:
    """``w = window`` or ``⌊fraction·L⌋`` (at least 1, at most L)."""
    w = window if window is not None else int(fraction * n_layers)
    if not 1 <= w <= n_layers:
        raise KmshcError(f"macro window: expected 1..{n_layers} layers, got {w} "
                         f"(window={window}, fraction={fraction})")
    return w


def best_window_drops(full: float, window_scores: list[float], n_layers: int, w: int) -> list[float]:
    """The paper's ``Δℓ = S(M) − max_{windows ∋ ℓ} S(M \\ window)``: ``[L]``."""
    return [full - max(window_scores[s] for s in range(len(window_scores)) if s <= layer < s + w)
            for layer in range(n_layers)]


def mean_window_drops(full: float, window_scores: list[float], n_layers: int, w: int) -> list[float]:
    """Edge-corrected ``Δℓ``: mean window drop over the windows containing ℓ: ``[L]``."""
    return [float(np.mean([full - window_scores[s] for s in range(len(window_scores)) if s <= layer < s + w]))
            for layer in range(n_layers)]


def select_layers(drops: list[float], percentile: float = DEFAULTS.percentile) -> tuple[int, ...]:
    """Layers whose drop is at or above the ``percentile``-th percentile (ties kept)."""
    cut = float(np.percentile(np.asarray(drops, dtype=float), percentile))
    return tuple(i for i, d in enumerate(drops) if d >= cut - 1e-12)


def macro_layer_search(rec: Recorder, shape: tuple[int, int], full: float | None = None, window: int | None = None,
                       fraction: float = DEFAULTS.window_fraction, percentile: float = DEFAULTS.percentile,
                       edge_correction: bool = DEFAULTS.edge_correction,
                       rng: random.Random | None = None, using: str = "",
                       universe: set[int] | None = None) -> MacroResult:
    """Score every full window in one batch and select layers. ``full``: ``S(M)`` if already known;
    ``using``: the recorder's scorer name for this stage; ``universe``: the heads that may be on
    (the rest stay ablated in every window and in ``full``)."""
    n_layers, n_heads = shape
    w = window_size(n_layers, window, fraction)
    start = rec.evaluations
    everything = allowed_heads(shape, universe)
    masks = [mask_of(everything - set(range(s * n_heads, (s + w) * n_heads)), shape) for s in range(n_layers - w + 1)]
    if full is None:
        masks.append(mask_of(everything, shape))
    scores = rec.many(torch.stack(masks), using=using)
    if full is None:
        full = scores.pop()
    drops = best_window_drops(full, scores, n_layers, w)
    corrected = mean_window_drops(full, scores, n_layers, w)
    res = MacroResult(w, full, tuple(scores), tuple(drops), tuple(corrected), select_layers(drops, percentile),
                      select_layers(corrected, percentile), percentile, edge_correction, rec.evaluations - start)
    rec.decision(rng or random.Random(0), size=len(res.layers) * n_heads, event="macro", window=w,
                 layers=list(res.layers), layers_paper=list(res.layers_paper),
                 layers_corrected=list(res.layers_corrected))
    return res
