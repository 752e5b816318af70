"""What a gate-training run writes into ``runs/<name>/`` (see docs/training.md, "Outputs": gates.json,
circuit_learned.json, gates_heatmap.png), as Lightning callbacks, plus the run-directory guard.

Loggers are duck-typed (``log_image``/``log_table`` exist on Lightning's ``WandbLogger``), so
nothing here imports wandb.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any, Sequence

import lightning as L
import torch

from kmshc.stats import bootstrap_means, percentile_interval

from kmshc.engine.memory import peak_rss_mb
from kmshc.search.gates_file import NAME as GATES
from kmshc.search.gates_file import gates_record, write_gates
from kmshc.train.plots import gate_heatmap
from kmshc.types import Circuit, KmshcError, atomic_write_json, ensure_writable_dir, mask_to_heads

RUN_FILES = (GATES, "circuit_learned.json", "checkpoints", "config.yaml")


def prepare_run_dir(run_dir: str | Path, overwrite: bool = False, resuming: bool = False) -> Path:
    """Refuse to clobber a finished or started run unless ``overwrite`` (wipes it) or ``resuming``."""
    run_dir = Path(run_dir)
    used = [f for f in RUN_FILES if (run_dir / f).exists()]
    if used and not (overwrite or resuming):
        raise KmshcError(f"{run_dir}: already holds a run ({', '.join(used)}); pass --overwrite to replace it, "
                         f"--ckpt_path {run_dir}/checkpoints/last.ckpt to resume it, or choose another --name")
    if used and overwrite and not resuming:
        shutil.rmtree(run_dir)
    return ensure_writable_dir(run_dir, "run directory")  # a clear error now, not a traceback at the first save


def module_gates(module, world_size: int = 1) -> dict[str, Any]:
    """The gates.json object of ``module``: every head's ``log_alpha`` and deterministic gate, how
    the gates started (``init``: :meth:`kmshc.train.init.GateInit.to_dict`), the training cost
    so far in example forwards (:mod:`kmshc.engine.cost`; ``world_size`` DDP ranks), and after a
    regularisation path its ranking (``order``, most important first)."""
    order = module.head_order()
    path = {} if order is None else {"order": order}
    return gates_record(module.experiment, module.gates.log_alpha.detach().float().cpu(),
                        module.gates.deterministic().detach().float().cpu(),
                        gate_threshold=module.hparams.gate_threshold, init=module.gate_init.to_dict(),
                        cost=module.cost_record(world_size), **path)


def bootstrap_ci(correct: torch.Tensor, n_boot: int = 1000, seed: int = 0) -> list[float]:
    """95% percentile bootstrap interval of the mean of per-example ``correct`` ``[n]``."""
    return list(percentile_interval(bootstrap_means(correct[None], n_boot, seed)[0]))


def split_scores(module, split: str, mask: torch.Tensor) -> tuple[dict[str, Any], int, float]:
    """Circuit, full-model and all-ablated scores on ``split``; also the evaluations and example forwards spent."""
    scorer = module.experiment.scorer_for(split)
    out = scorer.outcomes(torch.stack([mask, torch.ones_like(mask), torch.zeros_like(mask)]))
    acc = out.accuracy
    eps = module.hparams.epsilon
    return ({"accuracy": float(acc[0]), "margin": float(out.margin[0].mean()), "ci": bootstrap_ci(out.correct[0]),
             "n": scorer.n, "full_accuracy": float(acc[1]), "baseline_accuracy": float(acc[2]),
             "threshold": float(acc[2] + eps * (acc[1] - acc[2]))}, scorer.evaluations, scorer.cost.example_forwards)


SCORE_SPLITS = ("val", "test")  # where a finished run scores its learned circuit, unless told otherwise


class RunOutputs(L.Callback):
    """Writes the heatmap (and logs it) at every validation, and all run files when fit ends."""

    def __init__(self, run_dir: str | Path, config: dict[str, Any] | None = None,
                 score_splits: Sequence[str] = SCORE_SPLITS) -> None:
        self.run_dir, self.config, self.score_splits = Path(run_dir), config or {}, tuple(score_splits)
        self._t0 = time.perf_counter()

    def on_fit_start(self, trainer: L.Trainer, module) -> None:
        self._t0 = time.perf_counter()

    def on_validation_end(self, trainer: L.Trainer, module) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        threshold = module.hparams.gate_threshold
        path = self.run_dir / "gates_heatmap.png"
        gate_heatmap(module.gates.deterministic(), path, threshold=threshold,
                     title=f"step {trainer.global_step}: {int(module.circuit_mask().sum())} heads > {threshold}")
        write_gates(self.run_dir, module_gates(module, trainer.world_size))  # warm-startable
        for logger in trainer.loggers:
            if hasattr(logger, "log_image"):
                logger.log_image(key="gates_heatmap", images=[str(path)], step=trainer.global_step)

    def on_fit_end(self, trainer: L.Trainer, module) -> None:
        if not trainer.is_global_zero:
            return
        threshold, exp = module.hparams.gate_threshold, module.experiment
        record = module_gates(module, trainer.world_size)
        write_gates(self.run_dir, record)
        mask = module.circuit_mask()
        gate_heatmap(module.gates.deterministic(), self.run_dir / "gates_heatmap.png", threshold=threshold,
                     title=f"final: {int(mask.sum())} heads > {threshold}")
        scores, evals, report = {}, 0, 0.0
        for split in self.score_splits:
            scores[split], n, spent = split_scores(module, split, mask)
            evals, report = evals + n, report + spent
        gates = {k: v["gate"] for k, v in record["heads"].items()}
        circuit = Circuit(model=exp.model, task=exp.task_name, heads=tuple(h.name for h in mask_to_heads(mask)),
                          n_heads_total=module.n_total, scorer=exp.scorer, ablation=exp.ablation,
                          epsilon=module.hparams.epsilon, scores=scores, evaluations=evals,
                          example_forwards=record["cost"]["example_forwards"], seed=exp.seed,
                          config={"experiment": exp.to_dict(), "train": json.loads(json.dumps(self.config, default=str))},
                          extra={"method": "learned", "gate_threshold": threshold, "steps": trainer.global_step,
                                 "wall_time_s": round(time.perf_counter() - self._t0, 2),
                                 "peak_rss_mb": round(peak_rss_mb()), "gates": gates,
                                 "data_skipped": exp.data_skipped, "init": record["init"],
                                 "cost": {**record["cost"], "report_example_forwards": round(report, 3)}})
        circuit.save(self.run_dir / "circuit_learned.json")
        for logger in trainer.loggers:
            if hasattr(logger, "log_table"):
                rows = [[k, v["log_alpha"], v["gate"], v["gate"] > threshold] for k, v in record["heads"].items()]
                logger.log_table(key="circuit", columns=["head", "log_alpha", "gate", "kept"], data=rows)
            logger.log_metrics({f"final/{s}_{k}": v for s in scores for k, v in scores[s].items()
                                if isinstance(v, float)}, step=trainer.global_step)
        scored = "".join(f"; {s} accuracy {v['accuracy']:.3f} vs U={v['threshold']:.3f}" for s, v in scores.items())
        print(f"run directory: {self.run_dir}  ({len(circuit.heads)}/{module.n_total} heads{scored})")


class RankGatesDump(L.Callback):
    """Writes each rank's final gates to ``<dirpath>/gates_rank<r>.json`` (to check DDP sync)."""

    def __init__(self, dirpath: str) -> None:
        self.dirpath = Path(dirpath)

    def on_fit_end(self, trainer: L.Trainer, module) -> None:
        atomic_write_json(self.dirpath / f"gates_rank{trainer.global_rank}.json",
                          module.gates.log_alpha.detach().cpu().tolist())
