"""The DataModule for gate training: batches of training-example indices, and one validation step.

The model, task, splits and ablation all live in one :class:`~kmshc.experiment.Experiment`
that this DataModule owns; ``train.py`` hands the same object to the LightningModule, so
training and search score exactly the same data under the same ablation.
"""
from __future__ import annotations

import lightning as L
import torch
from torch.utils.data import DataLoader

from kmshc.engine.encoding import Batch, Encoded, encode, pad
from kmshc.experiment import Experiment


def batch_of(data: Encoded, examples: torch.Tensor) -> Batch:
    """A right-padded :class:`Batch` of ``examples`` ``[b]``; pairs give rows ``2i`` (good), ``2i+1`` (bad)."""
    r = data.rows_per_example
    rows = (examples[:, None] * r + torch.arange(r)).reshape(-1)
    ids, att = pad([data.seqs[i] for i in rows.tolist()], data.pad_id)
    return Batch(examples, rows, ids, att, data=data)


class GateDataModule(L.LightningDataModule):
    """Training batches are ``[batch_size]`` example indices of the train split (reshuffled each
    epoch; Lightning shards them under DDP). Validation is a single step that scores the
    whole val split at once, so its accuracy is exactly ``S(C)`` as the search computes it.

    Args:
        experiment: model, task, splits, scorer and ablation (see :class:`Experiment`).
        batch_size: training examples (pairs or prompts) per step.
    """

    def __init__(self, experiment: Experiment, batch_size: int = 16) -> None:
        super().__init__()
        self.experiment = experiment
        self.batch_size = batch_size
        self._train: Encoded | None = None

    @property
    def train_data(self) -> Encoded:
        if self._train is None:
            self._train = encode(self.experiment.splits["train"], self.experiment.loaded[1])
        return self._train

    def train_dataloader(self) -> DataLoader:
        return DataLoader(range(self.train_data.n), batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(range(1), batch_size=1)  # one step: the module scores the whole split
