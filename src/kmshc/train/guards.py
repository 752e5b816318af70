"""Checks that stop gate training early with an error naming the field or the step at fault.

Kept apart from :mod:`kmshc.train.module` so the module reads as the training loop alone.
"""
from __future__ import annotations

import torch

from kmshc.engine.ablation import ABLATIONS
from kmshc.train import objectives as obj
from kmshc.train.init import check_init
from kmshc.types import KmshcError


def check_hparams(*, objective: str, sparsity: str, target: float | None, gate_threshold: float, init: str,
                  path_steps: int, path_growth: float, ablation: str | None) -> None:
    """Raise a :class:`KmshcError` naming the first ``model.*`` field that cannot work."""
    if objective not in obj.FAITHFULNESS:
        raise KmshcError(f"model.objective: expected one of {', '.join(obj.FAITHFULNESS)}, got {objective!r}")
    if sparsity not in obj.SPARSITY:
        raise KmshcError(f"model.sparsity: expected one of {', '.join(obj.SPARSITY)}, got {sparsity!r}")
    if sparsity == "lagrangian" and target is None:
        raise KmshcError("model.target: the lagrangian controller needs a target (a head count or a fraction)")
    if sparsity == "lagrangian" and not 0 <= gate_threshold < 1:
        raise KmshcError(f"model.gate_threshold: the lagrangian controller needs it in [0, 1), got {gate_threshold}")
    check_init(init)
    if path_steps < 0 or (path_steps and (sparsity != "l0" or path_growth <= 1)):
        raise KmshcError(f"model.path_steps: a path needs sparsity 'l0', path_steps >= 0 and path_growth > 1; got "
                         f"path_steps {path_steps}, sparsity {sparsity!r}, path_growth {path_growth}")
    if ablation is not None and ablation not in ABLATIONS:
        raise KmshcError(f"model.ablation: expected one of {', '.join(ABLATIONS)} or null (the experiment's), "
                         f"got {ablation!r}")


def check_finite(loss: torch.Tensor, faith: torch.Tensor, penalty: torch.Tensor, log_alpha: torch.Tensor, *,
                 step: int, last_checkpoint: str) -> None:
    """Stop before a NaN/inf reaches the gates: ``last_checkpoint`` (``""``: none yet) keeps the last good state."""
    gates_finite = bool(torch.isfinite(log_alpha).all())
    if torch.isfinite(loss) and gates_finite:
        return
    raise KmshcError(f"training step {step}: the loss became {float(loss)} (faithfulness {float(faith)}, sparsity "
                     f"{float(penalty)}; gates finite: {gates_finite}); stopped before updating the gates. "
                     + (f"The last good checkpoint is {last_checkpoint}: lower model.lr and resume with --ckpt_path "
                        f"{last_checkpoint}" if last_checkpoint else
                        "No checkpoint was saved yet: lower model.lr and start again"))
