"""``kmshc train``: learn hard-concrete head gates (the LightningCLI of :mod:`kmshc.entry.train_cli`).

``kmshc train fit --config configs/train/tiny.yaml`` is ``python train.py fit --config ...``;
without a Lightning subcommand, ``fit`` is meant (``kmshc train --config ...``).
"""
from __future__ import annotations

import argparse

from kmshc.entry import add_passthrough_parser

LIGHTNING_SUBCOMMANDS = ("fit", "validate", "test", "predict")


def train_argv(argv: list[str]) -> list[str]:
    """``argv`` for LightningCLI: ``fit`` first unless a subcommand (or only help) is given."""
    if argv and (argv[0] in LIGHTNING_SUBCOMMANDS or argv[0] in ("-h", "--help", "--version")):
        return list(argv)
    return ["fit", *argv]


def _run(args: argparse.Namespace) -> None:
    from kmshc.entry.train_cli import main  # Lightning is imported only when training runs
    main(train_argv(args.argv))


def add_train_parser(sub) -> None:
    add_passthrough_parser(sub, "train", "learn head gates with Lightning (train.py)", _run)
