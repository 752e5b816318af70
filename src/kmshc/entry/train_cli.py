"""Gate training through LightningCLI: what ``kmshc train`` (and ``python train.py``) runs.

``kmshc train fit --config configs/train/tiny.yaml`` learns hard-concrete head gates on a frozen
LM. Outputs go to ``runs/<name>/`` (config.yaml, checkpoints/, gates.json, circuit_learned.json,
gates_heatmap.png, wandb/ or csv/). Resume with ``--ckpt_path runs/<name>/checkpoints/last.ckpt``;
replace a finished run with ``--overwrite``. W&B runs offline unless ``WANDB_MODE=online``.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Literal

from jsonargparse import ActionYesNo
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import CSVLogger, WandbLogger

from kmshc.train.datamodule import GateDataModule
from kmshc.engine.device import lightning_accelerator
from kmshc.entry.configs import resolve_config_args
from kmshc.train.module import GateModule
from kmshc.engine.quiet import quiet_lightning
from kmshc.train.run import SCORE_SPLITS, RunOutputs, prepare_run_dir
from kmshc.types import atomic_write_text, config_errors

__all__ = ["GateDataModule", "GateModule", "TrainCLI", "main"]


class SaveConfigToRun(SaveConfigCallback):
    """The resolved config goes to runs/<name>/config.yaml whatever the logger."""

    def save_config(self, trainer, pl_module, stage) -> None:
        atomic_write_text(Path(trainer.default_root_dir) / "config.yaml", self.parser.dump(self.config, skip_none=False))


class OfflineWandbLogger(WandbLogger):
    """Lightning's WandbLogger always hands ``anonymous=None`` to ``wandb.init``, and wandb ≥ 0.19
    warns that the setting has no effect on every run; we never set it, so it is not passed."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._wandb_init.pop("anonymous", None)


class TrainCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument("--name", default="default", help="run name: outputs go to <runs_dir>/<name>/")
        parser.add_argument("--runs_dir", default="runs", help="parent folder of run directories")
        parser.add_argument("--overwrite", action=ActionYesNo, default=False, help="replace an existing run directory")
        parser.add_argument("--log_to", choices=["wandb", "csv", "none"], default="wandb", help="logger")
        parser.add_argument("--score_splits", type=list[Literal["val", "test"]], default=list(SCORE_SPLITS),
                            help="splits on which the learned circuit, the full model and the baseline are scored "
                                 "when training ends (circuit_learned.json's scores; [] skips them)")
        parser.add_argument("--device", default=None,
                            help="auto|cpu|cuda|cuda:N: sets trainer.accelerator/devices and the experiment's device "
                                 "(default: the trainer's settings decide; the frozen model follows them)")
        # One Experiment object (model, splits, ablation) is shared by the data and the module.
        parser.link_arguments("data", "model.experiment", compute_fn=lambda dm: dm.experiment, apply_on="instantiate")

    def parse_arguments(self, parser, args) -> None:
        # Our entry points always pass ``args`` (the command line minus ``--debug``, or minus the
        # ``kmshc train`` verb), so LightningCLI's warning about ``args`` beside ``sys.argv`` never
        # applies; parse as LightningCLI does, without it.
        with config_errors("train config", "UTF-8 YAML with the sections of configs/train/tiny.yaml"):
            self.config = parser.parse_object(args) if isinstance(args, dict) else parser.parse_args(args)

    def instantiate_classes(self) -> None:
        with config_errors("train config", "UTF-8 YAML with the sections of configs/train/tiny.yaml"):
            super().instantiate_classes()

    def before_instantiate_classes(self) -> None:
        cfg = self.config[self.subcommand] if self.subcommand else self.config
        if cfg.get("device") is None:
            return
        accelerator, devices = lightning_accelerator(cfg.device)  # a bad spelling is a KmshcError
        cfg.trainer.accelerator = accelerator
        if devices is not None:
            cfg.trainer.devices = devices
        cfg.data.experiment.device = cfg.device

    def instantiate_trainer(self, **kwargs):
        cfg = self.config[self.subcommand] if self.subcommand else self.config
        run_dir = Path(cfg.runs_dir) / cfg.name
        if os.environ.get("LOCAL_RANK", "0") == "0" and os.environ.get("NODE_RANK", "0") == "0":
            prepare_run_dir(run_dir, overwrite=cfg.overwrite, resuming=bool(cfg.get("ckpt_path")))
        if cfg.log_to == "wandb":
            logger = OfflineWandbLogger(save_dir=str(run_dir), name=cfg.name, project="kmshc",
                                 offline=os.environ.get("WANDB_MODE", "offline") != "online")
        elif cfg.log_to == "csv":
            logger = CSVLogger(save_dir=str(run_dir), name="csv", version="")
        else:
            logger = False
        callbacks = list(self._get(self.config_init, "trainer.callbacks") or [])
        callbacks += [ModelCheckpoint(dirpath=run_dir / "checkpoints", save_last=True),
                      RunOutputs(run_dir, config=cfg.as_dict(), score_splits=cfg.score_splits)]
        return super().instantiate_trainer(default_root_dir=str(run_dir), logger=logger, callbacks=callbacks,
                                           **kwargs)


def main(args: list[str] | None = None) -> TrainCLI:
    """Run LightningCLI on ``args`` (``fit --config ...``); relative ``configs/...`` paths are
    found in the checkout or the installed package (:mod:`kmshc.entry.configs`)."""
    args = resolve_config_args(sys.argv[1:] if args is None else args)
    with quiet_lightning():
        return TrainCLI(GateModule, GateDataModule, save_config_callback=SaveConfigToRun,
                        save_config_kwargs={"save_to_log_dir": False}, args=args,
                        parser_kwargs={"prog": "kmshc train"})  # its usage and tips name the real command

