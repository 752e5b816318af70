"""The settings of the search drivers and their defaults, in one place.

:class:`SearchSettings` holds what :func:`~kmshc.search.refine.refine` and
:func:`~kmshc.search.refine.cold_search` take; :class:`~kmshc.search.config.SearchConfig` (one
search run: files, data, certificate) extends it, and the drivers' keyword defaults are read
from :data:`DEFAULTS`, so a default is written once. Pure: no model or data import.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class SearchSettings:
    """How Search-K-MSHC searches. ``macro``: ``null`` = on for paper semantics only."""

    semantics: Literal["keep", "paper"] = "keep"
    epsilon: float = 0.9
    threshold: float | None = None
    search_margin: float = 0.0  # search against U + search_margin on val; the certificate uses plain U
    K: int = 1
    N: int = 10
    gate_threshold: float = 0.5  # warm, start "gates": a head whose learned gate exceeds it starts in the circuit
    # warm: start from the heads whose gate exceeds gate_threshold ("gates"), or from the shortest
    # prefix of the learned order that reaches the bar ("prefix"; saturated gates that all read 1.0
    # start no larger than they must)
    start: Literal["gates", "prefix"] = "gates"
    weighted: bool = True
    # warm only: the deletion filter by log_alpha, the same in doubling blocks (gallop), or bundles
    strategy: Literal["ordered", "gallop", "bundles"] = "ordered"
    macro: bool | None = None
    window: int | None = None
    window_fraction: float = 0.2
    percentile: float = 75.0
    edge_correction: bool = False
    baseline: Literal["empty", "complement"] = "empty"
    ceil: bool = False
    halve_when_large: bool = False
    # rho of the adaptive decisions' error spending alpha * t**rho. 2 leaves 3/4 of alpha to the last
    # look, which settles the close removals and so the circuit's size; 1 stops clear decisions
    # sooner but decides close ones at alpha/2 (docs/search.md)
    spending_power: float = 2.0


DEFAULTS = SearchSettings()
