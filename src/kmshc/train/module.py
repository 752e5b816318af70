"""The LightningModule that learns one hard-concrete gate per attention head of a frozen LM.

The gates are the only parameters (the Lagrangian controller's multipliers are buffers it updates itself).
The frozen model is reached through the :class:`~kmshc.experiment.Experiment`, which is not an
``nn.Module``: so the model is not a child of this module, never enters its state dict or
checkpoints (513 MB otherwise), and Lightning's ``train()``/``eval()`` switching never takes
it out of eval mode (its dropout stays off). Lightning therefore does not move it either:
:meth:`setup` puts it on the device the trainer's strategy runs this process on (each DDP rank
its own GPU), and inputs follow it.
"""
from __future__ import annotations

from functools import cached_property

import lightning as L
import torch
from torchmetrics.classification import BinaryAccuracy

from kmshc.train import objectives as obj
from kmshc.engine.cost import RowCount
from kmshc.train.datamodule import batch_of
from kmshc.engine.device import input_device
from kmshc.engine.ablation import Ablation, folds_exactly
from kmshc.engine.encoding import Batch, Encoded, encode, fold_final_tokens
from kmshc.experiment import Experiment
from kmshc.search.settings import DEFAULTS
from kmshc.train.gates import HardConcreteGates
from kmshc.train.guards import check_finite, check_hparams
from kmshc.train.init import GateInit, gate_init
from kmshc.train.readouts import full_margins, margins, pair_logprobs, probe_targets, train_probe
from kmshc.train.path import PathRecord, level, path_lambda
from kmshc.engine.hooks import count_rows, gated
from kmshc.engine.probe import Probe
from kmshc.engine.readout import final_hidden, label_logits, last_positions, logits_from_hidden
from kmshc.engine.scoring import Scorer
from kmshc.types import KmshcError


class GateModule(L.LightningModule):
    """Learn gates ``[L, H]`` against a faithfulness loss plus a sparsity term.

    Args:
        experiment: model, task, splits, scorer and ablation (shared with the DataModule).
        objective: ``task`` (pair margin or label cross-entropy), ``match`` (the batch's mean
            margin asked to equal the full model's: :func:`~kmshc.train.objectives.margin_match_loss`),
            ``kl`` (KL from the full model at the scored positions) or ``probe`` (cross-entropy
            through a probe fitted once on the full model).
        sparsity: ``l0`` (``lam·E[L0]``) or ``lagrangian`` (end with ``target`` heads;
            :class:`~kmshc.train.objectives.LagrangianSparsity`).
        lam: weight per expected open head for ``l0``.
        target: circuit size for ``lagrangian``: a head count (> 1) or a fraction (≤ 1).
        warmup_steps: steps over which the target ramps linearly from all heads to ``target``;
            end it well before ``trainer.max_steps`` so the gates can follow.
        settle_steps: ``lagrangian``'s last steps of ``trainer.max_steps``, in which exactly
            ``target`` heads (the largest ``log_alpha``) are pushed above ``gate_threshold`` and the
            rest below; 0: none.
        lr: Adam learning rate of the gates' ``log_alpha``.
        lambda_lr: ``lagrangian``'s dual step: each step ``λ1`` moves by ``lambda_lr`` times the gap
            between the open fraction and the target, ``λ2`` by ``lambda_lr`` times its square.
        init_log_alpha: initial ``log_alpha`` (3.0: every gate starts ~open).
        init: ``constant`` (every gate at ``init_log_alpha``), or ``attribution`` /
            ``integrated_gradients``: ranked by that method on train (:mod:`kmshc.train.init`).
        path_steps: the last steps of ``trainer.max_steps`` walk a regularisation path
            (:mod:`kmshc.train.path`): open gates levelled to ``path_level``, then ``λ`` times
            ``path_growth`` each step; the order in which heads close is the run's ranking
            (gates.json ``order``). 0: no path.
        ablation: what an ablated head outputs while the gates train (``mean``, ``counterfactual``,
            ...); ``None``: the experiment's. Validation, the search and the certificate always
            use the experiment's, so a run can train under counterfactual patching and be
            certified under mean ablation.
        gate_threshold: a head is in the circuit when its deterministic gate exceeds it.
        epsilon: for the logged threshold ``U_ε = S(∅) + ε·(S(M) − S(∅))`` on val.
    """

    def __init__(self, experiment: Experiment, objective: str = "task", sparsity: str = "l0",
                 lam: float = 0.01, target: float | None = None, warmup_steps: int = 100, settle_steps: int = 30,
                 lr: float = 0.1, lambda_lr: float = 3.0, init_log_alpha: float = 3.0,
                 gate_threshold: float = DEFAULTS.gate_threshold, epsilon: float = DEFAULTS.epsilon,
                 init: str = "constant", path_steps: int = 0, path_growth: float = 1.06,
                 path_level: float = 2.0, ablation: str | None = None) -> None:
        super().__init__()
        check_hparams(objective=objective, sparsity=sparsity, target=target, gate_threshold=gate_threshold, init=init,
                      path_steps=path_steps, path_growth=path_growth, ablation=ablation)
        self.save_hyperparameters(ignore=["experiment"])
        self.experiment = experiment
        n_layers, n_heads = experiment.shape
        self.n_total = n_layers * n_heads
        self.target_frac = obj.target_fraction(target, self.n_total) if target is not None else None
        self.gates = HardConcreteGates(n_layers, n_heads, init_log_alpha=init_log_alpha)
        self.gate_init: GateInit = gate_init(experiment, init, init_log_alpha)  # a ranking runs here
        with torch.no_grad():
            self.gates.log_alpha.copy_(self.gate_init.log_alpha)
        self.controller = (obj.LagrangianSparsity(self.target_frac, warmup_steps=warmup_steps, lambda_lr=lambda_lr,
                                                  gate_threshold=gate_threshold) if sparsity == "lagrangian" else None)
        # only with a path: a checkpoint from a run without one has no such buffer
        self.path = PathRecord(n_layers, n_heads) if path_steps else None
        self.val_acc = BinaryAccuracy(threshold=0.5 - 1e-6)  # same rule as Outcome.accuracy
        self._reference: dict[str, float] | None = None

    # ------------------------------------------------------------------ frozen pieces
    @property
    def lm(self) -> torch.nn.Module:
        return self.experiment.loaded[0]

    @cached_property
    def train_data(self) -> Encoded:
        return encode(self.experiment.splits["train"], self.experiment.loaded[1])

    @cached_property
    def folds_pairs(self) -> bool:
        """Whether training runs one row per pair (:func:`kmshc.engine.ablation.folds_exactly`); decided
        once, since neither the train split nor the ablation changes. Fits the ablation values."""
        return self.hparams.objective in ("task", "match") and folds_exactly(self.train_data, self.train_ablation)

    @cached_property
    def train_ablation(self) -> Ablation:
        """The ablation the gates train under: ``model.ablation``, else the experiment's (fitted once)."""
        name, exp = self.hparams.ablation, self.experiment
        if name is None or name == exp.ablation:
            return exp.ablation_values
        exp.check_ablation(name, field="model.ablation")
        return exp.with_ablation(name).ablation_values

    @cached_property
    def val_scorer(self) -> Scorer:
        return self.experiment.scorer_for("val")

    @cached_property
    def cost(self) -> RowCount:
        """Rows the training steps ran, forward and backward (:mod:`kmshc.engine.cost`); validation is
        counted by :attr:`val_scorer`. Both are kept in checkpoints, so a resumed run adds up."""
        return RowCount(self.experiment.shape[0], self.train_data.rows_per_example)

    def cost_record(self, scale: int = 1) -> dict:
        """``{"example_forwards": total, "train": ..., "validation": ...}`` (each a :meth:`RowCount.to_dict`),
        plus ``"init"``, the ranking that set a ranked start (counted once, also in a resumed run);
        ``scale``: the number of DDP ranks, which all run the same number of rows."""
        parts = {"train": self.cost.to_dict(scale), "validation": self.val_scorer.cost.to_dict(scale)}
        if self.gate_init.cost is not None:
            parts["init"] = self.gate_init.cost.to_dict(scale)
        return {"example_forwards": round(sum(p["example_forwards"] for p in parts.values()), 3), **parts}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["kmshc_cost"] = {"train": self.cost.state(), "validation": self.val_scorer.cost.state()}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        hparams = checkpoint.get("hyper_parameters", {})
        if "tau" in hparams and "gate_threshold" not in hparams:  # hyperparameters that name it tau
            self.hparams.gate_threshold = hparams["tau"]
        saved = checkpoint.get("kmshc_cost", {})  # a checkpoint without counts starts from zero
        self.cost.restore(saved.get("train", {}))
        self.val_scorer.cost.restore(saved.get("validation", {}))

    @cached_property
    def probe(self) -> Probe:
        """PCA + logistic probe fitted once on the full model's last-token features of train."""
        return train_probe(self.lm, self.train_data, batch_size=self.experiment.batch_size,
                           probe_dim=self.experiment.probe_dim, device=input_device(self.lm))

    def setup(self, stage: str) -> None:
        """Put the frozen model where this process computes (the strategy's root device).

        A model spread by ``device_map`` stays where accelerate placed it.
        """
        if getattr(self.lm, "hf_device_map", None) is None:
            self.lm.to(self.trainer.strategy.root_device)

    def train(self, mode: bool = True) -> "GateModule":
        super().train(mode)
        self.lm.eval()  # belt and braces: the frozen model is never put in training mode
        return self

    # ------------------------------------------------------------------ training
    def faithfulness(self, batch: Batch, gates: torch.Tensor) -> torch.Tensor:
        """The faithfulness loss of ``batch`` under per-row gates ``[rows, L, H]``."""
        data, model = batch.data, self.lm
        ids, att = batch.input_ids, batch.attention_mask
        with gated(model, gates, self.train_ablation.values(batch)):
            h = final_hidden(model, ids, att)
        if self.hparams.objective == "probe":
            last = h[torch.arange(h.shape[0], device=h.device), last_positions(att)]
            return obj.probe_ce_loss(self.probe, last, probe_targets(data, batch.rows).to(h.device))
        if self.hparams.objective == "kl":
            with torch.no_grad():
                full = final_hidden(model, ids, att)
            if data.kind == "labels":  # the scored position is the last real token
                last = torch.arange(h.shape[0], device=h.device), last_positions(att)
                return obj.kl_from_full(logits_from_hidden(model, h[last])[:, None], logits_from_hidden(
                    model, full[last])[:, None], torch.ones(h.shape[0], 1, device=h.device))
            return obj.kl_from_full(logits_from_hidden(model, h[:, :-1]), logits_from_hidden(model, full[:, :-1]),
                                    att[:, 1:])
        if self.hparams.objective == "match":
            full = self.full_margins[batch.examples.cpu()].to(h.device)
            return obj.margin_match_loss(margins(model, batch, h), full)
        if data.kind == "labels":
            return obj.label_ce_loss(label_logits(model, h, att, data.label_ids), data.gold[batch.examples].to(h.device))
        return obj.pair_margin_loss(*pair_logprobs(model, batch, h).unbind(-1))

    @cached_property
    def full_margins(self) -> torch.Tensor:
        """``[n_train]``: the full model's margin on each train example, for ``match``; one pass, counted
        in :attr:`cost` (read it outside :func:`count_rows` blocks, which would count it twice)."""
        with count_rows(self.lm, self.cost):
            return full_margins(self.lm, self.train_data, batch_size=self.experiment.batch_size,
                                fold=self.folds_pairs, device=input_device(self.lm))

    def on_fit_start(self) -> None:
        steps, settle = self.trainer.max_steps, self.hparams.settle_steps
        if self.controller is not None and 0 < steps <= settle:
            raise KmshcError(f"model.settle_steps ({settle}) leaves no steps of trainer.max_steps ({steps}) to the "
                             "lagrangian controller's main phase: lower it, or raise trainer.max_steps")

    def _last_steps_from(self, steps: int) -> int | None:
        """The first of the last ``steps`` steps of ``trainer.max_steps`` (``None``: ``steps`` is 0, or no step limit)."""
        max_steps = self.trainer.max_steps if self._trainer else -1
        return max_steps - steps if max_steps > 0 and steps > 0 else None

    def path_from(self) -> int | None:
        """The first step of the regularisation path (``None``: no path, or no step limit)."""
        return self._last_steps_from(self.hparams.path_steps)

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        start = self.path_from()
        if start is not None and self.global_step > start:  # global_step counts the step just taken
            self.path.update(self.gates.deterministic().detach() > self.hparams.gate_threshold, self.global_step - 1)

    def head_order(self) -> list[str] | None:
        """Every head's name, most important first, from the path; ``None`` without one."""
        return None if self.path is None else self.path.head_names(self.gates.log_alpha)

    def settle_from(self) -> int | None:
        """The step where the Lagrangian controller's settle phase starts (``None``: no step limit or none asked)."""
        return self._last_steps_from(self.hparams.settle_steps)

    def training_step(self, examples: torch.Tensor, batch_idx: int) -> torch.Tensor:
        start = self.path_from()
        if start is not None and self.global_step == start:
            self.path.begin(self.gates.log_alpha)
            level(self.gates.log_alpha, self.hparams.path_level)  # saturated gates carry no order: start level
        batch = batch_of(self.train_data, examples.cpu())
        fold = self.folds_pairs
        if fold:  # pairs that differ in their final token alone: one row each, the same loss
            batch = fold_final_tokens(batch)
        batch = batch.to(input_device(self.lm))
        r = 1 if fold else self.train_data.rows_per_example
        # One gate draw per example; both sentences of a pair share it, so their margin
        # compares the same circuit.
        gates = self.gates.sample(examples.numel()).repeat_interleave(r, dim=0)
        _ = self.train_ablation  # fitted outside the count: every route pays it once (kmshc.engine.cost)
        if self.hparams.objective == "match":
            _ = self.full_margins  # one counted pass, outside the step's count (it would count twice inside)
        with count_rows(self.lm, self.cost):  # the backward pass is counted when it runs, after this block
            faith = self.faithfulness(batch, gates)
        el0 = self.gates.expected_l0()
        if self.controller is None:
            lam = self.hparams.lam if start is None else path_lambda(self.global_step, start, self.hparams.lam,
                                                                     self.hparams.path_growth)
            penalty = obj.l0_penalty(el0, lam)
        else:
            penalty = self.controller(self.gates, self.global_step, self.settle_from())
            self.log_dict({"train/target_heads": self.controller.target_at(self.global_step) * self.n_total,
                           "train/lambda1": self.controller.lambda1, "train/lambda2": self.controller.lambda2,
                           "train/n_open": self.circuit_mask().sum()})
        loss = faith + penalty
        last = getattr(self.trainer.checkpoint_callback, "last_model_path", "") if self._trainer else ""
        check_finite(loss, faith, penalty, self.gates.log_alpha, step=self.global_step, last_checkpoint=last or "")
        self.log_dict({"train/loss": loss, "train/faithfulness": faith, "train/expected_l0": el0},
                      prog_bar=True)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.gates.parameters(), lr=self.hparams.lr)

    # ------------------------------------------------------------------ validation
    def circuit_mask(self) -> torch.Tensor:
        """``[L, H]`` float mask of the heads whose deterministic gate exceeds ``gate_threshold``."""
        return (self.gates.deterministic().detach().cpu() > self.hparams.gate_threshold).float()

    def reference_scores(self) -> dict[str, float]:
        """Val accuracy of the full and the all-ablated model, and the threshold ``U_ε`` (once)."""
        if self._reference is None:
            full, none = self.val_scorer.outcomes(torch.stack([torch.ones(self.gates.log_alpha.shape),
                                                               torch.zeros(self.gates.log_alpha.shape)])).accuracy
            eps = self.hparams.epsilon
            self._reference = {"full_acc": float(full), "ablated_acc": float(none),
                               "threshold": float(none + eps * (full - none))}
        return self._reference

    def validation_step(self, _batch, batch_idx: int) -> None:
        out = self.val_scorer.outcomes(self.circuit_mask())
        correct = out.correct[0].to(self.device)  # the metric's state lives with the module
        self.val_acc.update(correct, torch.ones_like(correct, dtype=torch.long))
        self.log("val/acc", self.val_acc, prog_bar=True)
        self.log("val/margin", out.margin[0].mean())
        self.log("val/expected_l0", self.gates.expected_l0())
        self.log("val/n_open", self.circuit_mask().sum(), prog_bar=True)
        self.log_dict({f"val/{k}": v for k, v in self.reference_scores().items()})
