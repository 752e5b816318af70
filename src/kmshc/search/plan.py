"""The masks of one certificate, in the order they are scored, and where each one's row is.

A :class:`CertificatePlan` is built before anything is scored; the certificate scores
``plan.masks`` ``[M, L, H]`` in one batch and reads row ``plan.row[key]`` of the outcomes for
each check. Keys: ``("full",)``, ``("base",)``, ``("circuit",)``, ``("knockout",)``,
``("without", h)`` (keep semantics), ``("restore", bundle)`` (paper semantics) and
``("set", heads)`` for the negative controls (see :mod:`kmshc.search.controls`).
"""
from __future__ import annotations

import math
import random
from itertools import combinations

import torch

from kmshc.search.certificate import CertificateConfig
from kmshc.search.common import mask_of


class CertificatePlan:
    """The masks of one certificate and the row of each check; ``controls``: the first-stage
    negative controls as ``(kind, sorted flat heads)``."""

    def __init__(self, shape: tuple[int, int], C: list[int], semantics: str, K: int, cfg: CertificateConfig,
                 base_on: list[int], allowed: set[int] | None = None):
        self.shape, self.C, self.semantics, self.K, self.cfg = shape, C, semantics, K, cfg
        everything = set(range(shape[0] * shape[1]))
        self.masks: list[torch.Tensor] = []
        self.row: dict[tuple, int] = {}
        self.add(("full",), everything)
        self.add(("base",), set(base_on))
        self.add(("circuit",), set(C))
        self.add(("knockout",), everything - set(C))
        rng = random.Random(cfg.seed)
        if semantics == "keep":
            for h in C:
                self.add(("without", h), set(C) - {h})
        else:
            self.bundles, self.sampled = restore_bundles(C, K, cfg.restore_samples, cfg.seed) if C else ([], False)
            for b in self.bundles:
                self.add(("restore", b), (everything - set(C)) | set(b))
        pool = sorted(everything if allowed is None else allowed)
        self.controls: list[tuple[str, list[int]]] = []
        for _ in range(cfg.random_controls if C else 0):
            S = sorted(rng.sample(pool, len(C)))
            self.controls.append(("random", S))
            self.add(("set", tuple(S)), set(S) if semantics == "keep" else everything - set(S))
        outside = sorted(set(pool) - set(C))
        if semantics == "keep" and C and cfg.extra_heads and len(outside) >= cfg.extra_heads:
            E = sorted(rng.sample(outside, cfg.extra_heads))
            S = sorted(set(C) | set(E))
            self.controls.append(("plus_random", S))
            self.add(("set", tuple(S)), set(S))
            for e in E:
                self.add(("set", tuple(sorted(set(S) - {e}))), set(S) - {e})
        self.first_stage = len(self.masks)

    def add(self, key: tuple, active: set[int]) -> int:
        """Row of ``key``, whose mask keeps ``active`` on; a new key appends its mask."""
        if key not in self.row:
            self.row[key] = len(self.masks)
            self.masks.append(mask_of(active, self.shape))
        return self.row[key]

    def without(self, h: int) -> list[int]:
        """``C \\ {h}`` as a control set (keep semantics). Its mask is the removal row of ``h``,
        already scored, so the set is registered under that row rather than scored again."""
        S = sorted(set(self.C) - {h})
        self.row.setdefault(("set", tuple(S)), self.row[("without", h)])
        return S

    @property
    def evaluations(self) -> int:
        return len(self.masks)


def restore_bundles(C: list[int], K: int, n_samples: int, seed: int) -> tuple[list[tuple[int, ...]], bool]:
    """Every K-bundle of ``C`` when there are at most ``n_samples``, else ``n_samples`` random ones;
    and whether they were sampled."""
    total = math.comb(len(C), K)
    if total <= n_samples:
        return [tuple(b) for b in combinations(C, K)], False
    rng = random.Random(seed)
    return [tuple(sorted(rng.sample(C, K))) for _ in range(n_samples)], True
