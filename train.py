"""Learn hard-concrete head gates:  python train.py fit --config configs/train/tiny.yaml

The same as ``kmshc train fit ...``; the code lives in :mod:`kmshc.entry.train_cli`. The names
below stay importable from here for scripts written against this file.
"""
import sys

from kmshc.entry.train_cli import GateDataModule, GateModule, TrainCLI, main  # noqa: F401

if __name__ == "__main__":
    from kmshc.cli import main as kmshc_main
    sys.exit(kmshc_main(["train", *sys.argv[1:]]))
