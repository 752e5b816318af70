"""The score ``S(A)``: task accuracy with only the heads in ``A`` active.

Three scorers: ``pair_logprob`` (minimal pairs), ``label_tokens`` (prompt + label words) and
``probe`` (the paper's PCA + linear probe, fitted on one split and scored on another).
Several masks are evaluated in one forward pass by expanding the batch: each row carries its
own gate vector (mask-major: row ``m·R + r`` is batch row ``r`` under mask ``m``).
"""
from __future__ import annotations

import torch
from torch import nn

from kmshc.engine.ablation import (DEFAULT_ABLATION, Ablation, CounterfactualAblation, MeanAblation, ZeroAblation,
                            folds_exactly, make_ablation, require_counterfactuals)
from kmshc.engine.architectures import head_shape
from kmshc.engine.cost import RowCount
from kmshc.engine.device import input_device
from kmshc.engine.distributed import gather_owned, owner_of, rank
from kmshc.engine.encoding import Batch, Encoded, encode, fold_final_tokens
from kmshc.engine.hooks import count_rows
from kmshc.engine.memory import logits_chunk_tokens, rows_per_forward
from kmshc.engine.prefix import PrefixCache, SplitPlan, gated_hidden, plan_splits, prefix_streams, unique_masks
from kmshc.engine.probe import Probe, fit_probe
from kmshc.engine.readout import (Outcome, class_margin, final_token_logprobs, first_differing_tokens, label_logits,
                           last_positions, sequence_logprobs)
from kmshc.tasks.base import Task
from kmshc.types import KmshcError

SCORERS = ("pair_logprob", "label_tokens", "probe")


# ---------------------------------------------------------------- the scorer
class Scorer:
    """``S(·)`` on one task split; call it with a mask ``[L, H]`` to get an accuracy.

    ``outcomes(masks)`` evaluates ``[M, L, H]`` masks and returns per-example results; every
    mask counts as one evaluation in :attr:`evaluations`, and every row it really runs through
    the model (after the speed levers below) in :attr:`cost` (:class:`kmshc.engine.cost.RowCount`).

    Speed levers (none changes a result beyond float rounding):

    * masks are stacked along the batch, ``max_rows`` rows per forward (default: sized from free memory);
    * identical masks of one call run once;
    * ``prefix_cache``: masks are grouped by the layer where they first differ from a reference
      mask (:func:`kmshc.engine.prefix.plan_splits`); the reference's streams entering those layers come
      from one prefix pass per batch, are cached per prefix mask (:mod:`kmshc.engine.prefix`), and each
      group skips the layers below its own; a single mask reuses the split layer of the last
      multi-mask call;
    * ``skip_shared_tokens`` (pairs, zero/mean/counterfactual ablation): a pair's margin is summed
      only from the first token where its sentences (or their counterfactuals) differ, since the
      shared prefix cancels. Only margins are reported, never the absolute log-probabilities.
    * ``distributed``: under torch.distributed, rank ``r`` scores batches ``r, r+W, …`` of every
      evaluation and the per-example results are gathered, so each rank returns the full
      ``[M, n]``, bitwise equal to one process's (each batch is the same batch either way).

    Inputs go to the device of the model's input embedding; outcomes come back on the CPU.

    Args:
        ablation: ``"mean"`` (the default, Experiment's; needs ``train``), ``"zero"``, ``"resample"``,
            ``"counterfactual"`` (needs a task with counterfactuals), or an :class:`Ablation`.
        train: the split that mean ablation averages over and that the probe is fitted on.
        probe_fixed: fit the probe once on the full model instead of once per mask.
    """

    def __init__(self, model: nn.Module, tokenizer, task: Task, scorer: str = "pair_logprob",
                 ablation: str | Ablation = DEFAULT_ABLATION, train: Task | None = None, per_position: bool = False,
                 batch_size: int = 32, max_rows: int | None = None, probe_dim: int = 3, probe_fixed: bool = False,
                 seed: int = 0, prefix_cache: bool = True, cache_bytes: int = 256 << 20,
                 skip_shared_tokens: bool = True, distributed: bool = False) -> None:
        if scorer not in SCORERS:
            raise KmshcError(f"scorer: expected one of {', '.join(SCORERS)}, got {scorer!r}")
        if scorer == "label_tokens" and task.kind != "labels":
            raise KmshcError(f"scorer 'label_tokens' needs a label task, but {task.name!r} is minimal pairs; "
                             "use 'pair_logprob' or 'probe'")
        if scorer == "pair_logprob" and task.kind != "pairs":
            raise KmshcError(f"scorer 'pair_logprob' needs minimal pairs, but {task.name!r} is a label task")
        self.model, self.scorer, self.batch_size, self.max_rows = model, scorer, batch_size, max_rows
        self.device, self.distributed = input_device(model), distributed
        self.shape = head_shape(model)
        self.data = encode(task, tokenizer)
        self.n = self.data.n
        self.train = encode(train, tokenizer) if train is not None else None
        self.ablation = ablation if isinstance(ablation, Ablation) else make_ablation(
            ablation, model, self.train, per_position=per_position, seed=seed)
        if isinstance(self.ablation, CounterfactualAblation):
            require_counterfactuals(self.data)  # fail here, naming the task, not mid-search
        self.probe_dim, self.probe_fixed, self._probe = probe_dim, probe_fixed, None
        if scorer == "probe" and self.train is None:
            raise KmshcError("scorer 'probe' needs a training split to fit the probe on")
        self.evaluations = 0
        self.cost = RowCount(self.shape[0], self.data.rows_per_example)
        self.cache = PrefixCache(cache_bytes) if prefix_cache else None
        self._split_hint = 0  # split layer of the last multi-mask call, reused by single masks
        self._start = self._shared_token_starts() if skip_shared_tokens and self.data.kind == "pairs" else None
        self._logit_tokens = logits_chunk_tokens(model)
        # Pairs that differ in their final token alone run one row each (kmshc.engine.ablation.folds_exactly).
        self._fold = skip_shared_tokens and folds_exactly(self.data, self.ablation)

    def _shared_token_starts(self) -> torch.Tensor | None:
        """Per row, the first token whose log-probability can differ between a pair's two rows.

        Zero and mean ablation act per position alike on both rows, so the pair's shared prefix
        cancels. Counterfactual values come from the pair's two counterfactual rows, which share
        their own prefix: the prefix cancels up to where either the clean or the counterfactual
        rows first differ. Resample values come from different examples: nothing cancels.
        """
        if isinstance(self.ablation, (ZeroAblation, MeanAblation)):
            return first_differing_tokens(self.data.seqs)
        if isinstance(self.ablation, CounterfactualAblation):
            return torch.minimum(first_differing_tokens(self.data.seqs), first_differing_tokens(self.data.cf_seqs))
        return None

    # -- per-batch work
    def _batch_scores(self, data: Encoded, batch: Batch, masks: torch.Tensor, kind: str,
                      layer: int = 0, prefix: torch.Tensor | None = None) -> torch.Tensor:
        """``[M, R]`` sequence log-probs, ``[M, b, K]`` label logits, or ``[M, R, F]`` features."""
        m = masks.shape[0]
        h = gated_hidden(self.model, batch, masks, self.ablation, layer, prefix)
        if kind == "features":
            last = h[torch.arange(h.shape[0], device=h.device), last_positions(batch.attention_mask.repeat(m, 1))]
            return last.float().view(m, -1, last.shape[-1])
        if kind == "labels":
            return label_logits(self.model, h, batch.attention_mask.repeat(m, 1), data.label_ids).view(m, -1, len(data.label_ids))
        if batch.candidates is not None:  # folded pairs: good and bad final token from one row
            return final_token_logprobs(self.model, h, batch.attention_mask.repeat(m, 1),
                                        batch.candidates.repeat(m, 1)).view(m, -1)
        start = None if self._start is None or data is not self.data else self._start[batch.rows].repeat(m)
        return sequence_logprobs(self.model, h, batch.input_ids.repeat(m, 1), batch.attention_mask.repeat(m, 1),
                                 chunk_tokens=self._logit_tokens, start=start).view(m, -1)

    def _plan(self, masks: torch.Tensor) -> SplitPlan:
        """Where each mask starts (:func:`kmshc.engine.prefix.plan_splits`); all at 0 without the cache."""
        if self.cache is None:
            return SplitPlan(0, torch.zeros(masks.shape[0], dtype=torch.long), 0)
        plan = plan_splits(masks, fallback=self._split_hint)
        if plan.first < self.shape[0]:  # masks that differ: remember where they first do
            self._split_hint = plan.first
        return plan

    def _streams(self, data: Encoded, batch: Batch, mask: torch.Tensor, layers: list[int]) -> dict[int, torch.Tensor]:
        """The streams ``[R, T, F]`` entering each of ``layers`` (sorted, > 0) under ``mask`` ``[L, H]``:
        from the cache, else from one prefix pass that starts at the deepest cached one below them."""
        batch_key = (data.uid, *batch.rows.tolist())
        keys = {layer: PrefixCache.key(batch_key, layer, mask) for layer in layers}
        found = {layer: self.cache.get(key) for layer, key in keys.items()}
        missing = [layer for layer in layers if found[layer] is None]
        if missing:
            base = max((layer for layer in layers if layer < missing[0]), default=0)
            fresh = prefix_streams(self.model, batch, mask, self.ablation, missing, start=base, prefix=found.get(base))
            for layer, hidden in fresh.items():
                self.cache.put(keys[layer], hidden)
            found.update(fresh)
        return found

    def _grouped_scores(self, data: Encoded, batch: Batch, masks: torch.Tensor, kind: str,
                        plan: SplitPlan) -> torch.Tensor:
        """:meth:`_batch_scores` of one batch for all ``masks`` ``[M, L, H]``, in mask order.

        Masks run in groups of equal start layer, each group fed the reference mask's stream
        entering its layer; at most one stream per layer is held while the batch runs, and a
        forward holds at most ``max_rows`` rows (whole masks of the batch, at least one).
        """
        rows, t = batch.input_ids.shape
        per = max(1, (self.max_rows or rows_per_forward(self.model, t)) // rows)  # masks per forward
        layers = sorted(set(plan.starts.tolist()))
        streams = self._streams(data, batch, masks[plan.reference], [x for x in layers if x]) if layers[-1] else {}
        parts, order = [], []
        for layer in layers:
            group = (plan.starts == layer).nonzero()[:, 0]
            for s in range(0, group.numel(), per):
                idx = group[s:s + per]
                parts.append(self._batch_scores(data, batch, masks[idx], kind, layer, streams.get(layer)))
                order.append(idx)
        return torch.cat(parts)[torch.cat(order).argsort().to(parts[0].device)]

    def _collect(self, data: Encoded, masks: torch.Tensor, kind: str) -> torch.Tensor:
        """Run every batch of ``data`` under ``masks``; results indexed by row (or example for labels).

        ``[M, rows]`` log-probs, ``[M, n, K]`` label logits or ``[M, rows, F]`` features, on :attr:`device`.
        Identical masks run once.
        """
        trailing = {"labels": (len(data.label_ids),) if data.label_ids is not None else (),
                    "features": (self.model.get_output_embeddings().weight.shape[1],)}.get(kind, ())
        n_index = data.n if kind == "labels" else len(data.seqs)
        keep, copy_of = unique_masks(masks)
        masks = masks[keep]
        out = torch.zeros(masks.shape[0], n_index, *trailing, device=self.device)
        owner = torch.zeros(out.shape[1], dtype=torch.long)  # which rank scored each index
        plan = self._plan(masks)
        for i, batch in enumerate(data.batches(self.batch_size)):
            idx = batch.examples if kind == "labels" else batch.rows
            owner[idx] = owner_of(i)
            if self.distributed and owner_of(i) != rank():
                continue
            if kind == "logprobs" and self._fold and data is self.data:
                batch = fold_final_tokens(batch)  # half the rows, the same margins
            batch = batch.to(self.device)
            scores = self._grouped_scores(data, batch, masks, kind, plan)
            out[:, idx.to(out.device)] = scores.to(out.device)  # lm_head may sit elsewhere (device_map)
        out = gather_owned(out, owner) if self.distributed else out
        return out[copy_of.to(out.device)]

    def outcomes(self, masks: torch.Tensor) -> Outcome:
        """Per-example outcomes ``[M, n]`` (on the CPU) of ``masks`` ``[M, L, H]`` or ``[L, H]``;
        the rows run are counted in :attr:`cost`."""
        masks = masks[None] if masks.dim() == 2 else masks
        if tuple(masks.shape[1:]) != self.shape:
            raise ValueError(f"masks must be [M, {self.shape[0]}, {self.shape[1]}], got {tuple(masks.shape)}")
        self.evaluations += masks.shape[0]
        with count_rows(self.model, self.cost):
            out = self._outcomes(masks)
        return Outcome(out.correct.cpu(), out.margin.cpu())

    def batch_margins(self, batch: Batch, masks: torch.Tensor) -> torch.Tensor:
        """``[M, b]`` margins (as in :class:`Outcome`) of one ``batch`` of :attr:`data` under ``masks``
        ``[M, L, H]``. No prefix cache and no counting; differentiable in ``masks`` outside inference mode."""
        if self.scorer == "probe":
            raise KmshcError("batch margins need the pair_logprob or label_tokens scorer, not the probe")
        if self.data.kind == "labels":
            gold = self.data.gold[batch.examples]
            return torch.stack([class_margin(l, gold) for l in self._batch_scores(self.data, batch, masks, "labels")])
        if self._fold and batch.candidates is None:
            batch = fold_final_tokens(batch).to(batch.input_ids.device)
        lp = self._batch_scores(self.data, batch, masks, "logprobs")
        return lp[:, 0::2] - lp[:, 1::2]

    @torch.inference_mode()
    def _outcomes(self, masks: torch.Tensor) -> Outcome:
        if self.scorer == "pair_logprob":
            lp = self._collect(self.data, masks, "logprobs")
            margin = lp[:, 0::2] - lp[:, 1::2]
            return Outcome((margin > 0).float(), margin)
        if self.scorer == "label_tokens":
            margin = torch.stack([class_margin(l, self.data.gold) for l in self._collect(self.data, masks, "labels")])
            return Outcome((margin > 0).float(), margin)
        return self._probe_outcomes(masks)

    def _probe_targets(self, data: Encoded) -> torch.Tensor:
        if data.kind == "labels":
            return data.gold
        return torch.tensor([1, 0]).repeat(data.n)  # good sentence = 1, bad = 0

    def _probe_outcomes(self, masks: torch.Tensor) -> Outcome:
        n_classes = len(self.data.label_ids) if self.data.kind == "labels" else 2
        feats = self._collect(self.data, masks, "features")
        y = self._probe_targets(self.data).to(feats.device)
        if self.probe_fixed and self._probe is None:
            full = torch.ones(1, *self.shape)
            self._probe = fit_probe(self._collect(self.train, full, "features")[0],
                                    self._probe_targets(self.train).to(feats.device), self.probe_dim, n_classes)
        train_feats = None if self.probe_fixed else self._collect(self.train, masks, "features")
        margins = []
        for i in range(masks.shape[0]):
            probe: Probe = self._probe if self.probe_fixed else fit_probe(
                train_feats[i], self._probe_targets(self.train).to(feats.device), self.probe_dim, n_classes)
            margins.append(class_margin(probe.logits(feats[i]), y))
        margin = torch.stack(margins)
        if self.data.kind == "pairs":  # per pair: the mean over its two sentences
            margin = margin.view(margin.shape[0], -1, 2).mean(-1)
            correct = (torch.stack(margins) > 0).float().view(margin.shape[0], -1, 2).mean(-1)
        else:
            correct = (margin > 0).float()
        return Outcome(correct, margin)

    def __call__(self, mask: torch.Tensor) -> float:
        return float(self.outcomes(mask).accuracy[0])

    def full_mask(self) -> torch.Tensor:
        return torch.ones(self.shape)
