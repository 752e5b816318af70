"""Ablation values ``a`` that replace a gated-off head's output: zero, mean, resample, counterfactual.

Each ablation returns, for one batch, a list with one entry per layer that
:func:`kmshc.engine.hooks.gated` broadcasts to ``[rows, T, H, d]`` (``None`` means zero).
"""
from __future__ import annotations

import random

import torch
from torch import nn

from kmshc.engine.architectures import head_shape
from kmshc.engine.device import input_device
from kmshc.engine.encoding import Batch, Encoded, final_token_pairs, pad
from kmshc.engine.hooks import capture_head_outputs
from kmshc.engine.memory import TensorLRU
from kmshc.types import KmshcError

ABLATIONS = ("zero", "mean", "resample", "counterfactual")
# The default ablation of Experiment and of everything that takes one (Scorer, kmshc score, kmshc rank).
DEFAULT_ABLATION = "mean"


class Ablation:
    name = "zero"

    def values(self, batch: Batch, n_masks: int = 1) -> list[torch.Tensor | None] | None:
        """Per-layer values for ``batch`` repeated for ``n_masks`` masks (mask-major rows)."""
        return None


class ZeroAblation(Ablation):
    name = "zero"


class MeanAblation(Ablation):
    """Each head's mean output over a (training) split, over all positions or per position.

    ``means[layer]``: ``[H, d]`` or, per position, ``[T_max, H, d]``; positions past the longest
    fitted sequence fall back to the all-position mean.
    """

    name = "mean"

    def __init__(self, means: list[torch.Tensor], overall: list[torch.Tensor], per_position: bool) -> None:
        self.means, self.overall, self.per_position = means, overall, per_position

    @classmethod
    @torch.no_grad()  # not inference_mode: these values are reused inside autograd when training
    def fit(cls, model: nn.Module, data: Encoded, per_position: bool = False, batch_size: int = 32) -> "MeanAblation":
        n_layers, _ = head_shape(model)
        sums: list[torch.Tensor | None] = [None] * n_layers
        counts: torch.Tensor | None = None
        device = input_device(model)
        for batch in data.batches(batch_size):
            store: list = []
            with capture_head_outputs(model, store):
                model.base_model(input_ids=batch.input_ids.to(device), attention_mask=batch.attention_mask.to(device))
            w = batch.attention_mask.to(torch.float64)  # [R, T]: pad positions do not count
            c = w.sum(0)
            counts = c if counts is None else _add_padded(counts, c)
            for layer, z in enumerate(store[0]):  # each layer's values stay on that layer's device
                s = torch.einsum("rt,rthd->thd", w.to(z.device), z.to(torch.float64))
                sums[layer] = s if sums[layer] is None else _add_padded(sums[layer], s)
        if counts is None or counts.sum() == 0:
            raise KmshcError("mean ablation needs a non-empty training split to average over")
        dtype = next(model.parameters()).dtype
        overall = [(s.sum(0) / counts.sum().to(s.device)).to(dtype) for s in sums]
        means = ([(s / counts.clamp(min=1)[:, None, None].to(s.device)).to(dtype) for s in sums]
                 if per_position else overall)
        return cls(means, overall, per_position)

    def values(self, batch: Batch, n_masks: int = 1) -> list[torch.Tensor]:
        if not self.per_position:
            return self.means
        t = batch.input_ids.shape[1]
        out = []
        for m, o in zip(self.means, self.overall):
            if m.shape[0] < t:
                m = torch.cat([m, o.expand(t - m.shape[0], *o.shape)])
            out.append(m[:t])
        return out


def _add_padded(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Add two tensors whose first (position) dimension may differ, zero-padding the shorter."""
    if a.shape[0] < b.shape[0]:
        a, b = b, a
    a = a.clone()
    a[: b.shape[0]] += b
    return a


class PatchAblation(Ablation):
    """A head's output on another input, position for position (activation patching).

    Subclasses choose, for each row of a split, the token sequence to run (:meth:`source_seq`).
    Values do not depend on the mask, so each row's are computed once on the unhooked model and
    kept in an LRU bounded by ``cache_bytes``, per row rather than per batch: training draws new
    batches every step, but from the same rows, so a 120-item train split costs 120 example
    forwards however long training runs. Each row runs padded to the longest source sequence of
    its split; in a causal model a position's output depends only on the positions before it, so
    the first ``T`` positions are what a run cut to a batch of length ``T`` would give. The
    default bound, 1 GiB, holds a 240-pair split of SmolLM2 whose pairs fold into one row each
    (69 KB per token of a row: 660 MB at 40 tokens).
    """

    def __init__(self, model: nn.Module, cache_bytes: int = 1 << 30) -> None:
        self.model = model
        self.cache = TensorLRU(cache_bytes)  # (split uid, row) -> [L, W, H, d]
        self._width: dict[int, int] = {}  # split uid -> its longest source sequence

    def source_seq(self, data: Encoded, row: int) -> torch.Tensor:
        raise NotImplementedError

    def width(self, data: Encoded) -> int:
        if data.uid not in self._width:
            self._width[data.uid] = max(len(self.source_seq(data, r)) for r in range(len(data.seqs)))
        return self._width[data.uid]

    @torch.no_grad()  # not inference_mode: these values are reused inside autograd when training
    def _compute(self, batch: Batch) -> list[torch.Tensor]:
        data, T = batch.data, batch.input_ids.shape[1]
        rows = [int(i) for i in batch.rows]
        # keyed by the split's uid, never id(): a freed split's address can be reused by a new one
        unique = list(dict.fromkeys(rows))  # a row can repeat within a batch
        got = {r: v for r in unique if (v := self.cache.get((data.uid, r))) is not None}
        missing = [r for r in unique if r not in got]
        if missing:
            W = self.width(data)
            ids, att = pad([self.source_seq(data, r) for r in missing], data.pad_id, W)
            store: list = []
            device = input_device(self.model)
            with capture_head_outputs(self.model, store):
                self.model.base_model(input_ids=ids.to(device), attention_mask=att.to(device))
            stacked = torch.stack(store[0])  # [L, R, W, H, d]
            for j, r in enumerate(missing):
                got[r] = stacked[:, j].clone()  # a copy, so the cache holds one row and not the batch
                self.cache.put((data.uid, r), got[r])
        out = torch.stack([got[r][:, :T] for r in rows], dim=1)  # [L, R, T', H, d], T' = min(T, W)
        if out.shape[2] < T:  # a batch longer than every source: positions past them stay zero
            out = torch.nn.functional.pad(out, (0, 0, 0, 0, 0, T - out.shape[2]))
        return list(out.unbind(0))

    def values(self, batch: Batch, n_masks: int = 1) -> list[torch.Tensor]:
        vals = self._compute(batch)
        return vals if n_masks == 1 else [v.repeat(n_masks, 1, 1, 1) for v in vals]


class ResampleAblation(PatchAblation):
    """A head's output on a paired corrupted input: another example of the same split and role.

    The pairing is a seeded derangement of each split's examples.
    """

    name = "resample"

    def __init__(self, model: nn.Module, seed: int = 0, cache_bytes: int = 256 << 20) -> None:
        super().__init__(model, cache_bytes)
        self.seed = seed
        self._partners: dict[int, list[int]] = {}  # one small list per split

    def partners(self, data: Encoded) -> list[int]:
        """A derangement of ``range(data.n)``: no example is paired with itself."""
        if data.uid not in self._partners:
            if data.n < 2:
                raise KmshcError("resample ablation needs at least two examples to pair")
            perm, rng = list(range(data.n)), random.Random(self.seed)
            while any(i == p for i, p in enumerate(perm)):
                rng.shuffle(perm)
            self._partners[data.uid] = perm
        return self._partners[data.uid]

    def source_seq(self, data: Encoded, row: int) -> torch.Tensor:
        r, partner = data.rows_per_example, self.partners(data)
        return data.seqs[partner[row // r] * r + row % r]


class CounterfactualAblation(PatchAblation):
    """A head's output on the same example's counterfactual (ACDC / EAP / MIB activation patching).

    Row ``i`` takes its values from ``data.cf_seqs[i]`` (e.g. IOI's ABC prompt with the same
    continuation), never from another example. Tasks without counterfactuals are refused.
    """

    name = "counterfactual"

    def source_seq(self, data: Encoded, row: int) -> torch.Tensor:
        require_counterfactuals(data)
        return data.cf_seqs[row]


def require_counterfactuals(data: Encoded) -> None:
    """Raise a :class:`KmshcError` naming the task unless ``data`` carries counterfactuals."""
    if data.cf_problem:
        raise KmshcError(f"task {data.name or '?'!r}: the 'counterfactual' ablation cannot be used: {data.cf_problem}")
    if data.cf_seqs is None:
        raise KmshcError(f"task {data.name or '?'!r} has no counterfactuals, so the 'counterfactual' ablation "
                         "cannot be used on it; use zero, mean or resample, or a task that defines them "
                         "(ioi, greater_than, induction)")


def folds_exactly(data: Encoded, ablation: "Ablation") -> bool:
    """Whether scoring each pair of ``data`` from one folded row (:func:`kmshc.engine.encoding.fold_final_tokens`)
    gives exactly the two-row margin under ``ablation``.

    The pairs must differ in their final token alone, and the ablation values must agree on a
    pair's two rows before it: zero and mean act per position alike on both rows, and the
    counterfactual rows must be final-token pairs too. Resample patches each row from another
    example whose final token may fall inside the row, so it does not fold.
    """
    if data.kind != "pairs" or not final_token_pairs(data.seqs):
        return False
    if isinstance(ablation, CounterfactualAblation):
        return data.cf_seqs is not None and final_token_pairs(data.cf_seqs)
    return isinstance(ablation, (ZeroAblation, MeanAblation))


def make_ablation(kind: str, model: nn.Module, train: Encoded | None, per_position: bool = False,
                  seed: int = 0) -> Ablation:
    """Build an ablation by name. ``mean`` averages over ``train``; ``resample`` pairs within each split;
    ``counterfactual`` patches from each example's own counterfactual."""
    if kind == "zero":
        return ZeroAblation()
    if kind == "mean":
        if train is None:
            raise KmshcError("mean ablation needs the task's training split")
        return MeanAblation.fit(model, train, per_position=per_position)
    if kind == "resample":
        return ResampleAblation(model, seed=seed)
    if kind == "counterfactual":
        return CounterfactualAblation(model)
    raise KmshcError(f"ablation: expected one of {', '.join(ABLATIONS)}, got {kind!r}")
