"""Command-line entry points of the ``kmshc`` command, one module per verb.

Each module has an ``add_<verb>_parser(sub)`` that :func:`kmshc.cli.build_parser` registers, and
imports its heavy dependencies (torch, Lightning, transformers) only when the verb runs, so
``kmshc --help`` stays fast.
"""
from __future__ import annotations

import argparse

SUBCOMMANDS_HELP = "arguments after the verb go to it unchanged; `kmshc VERB --help` lists them"


def add_passthrough_parser(sub, verb: str, help: str, run) -> argparse.ArgumentParser:
    """A verb whose arguments belong to another parser (LightningCLI, jsonargparse): everything
    after the verb, options included, is collected into ``args.argv`` for ``run(args)``."""
    p = sub.add_parser(verb, help=help, description=f"{help}; {SUBCOMMANDS_HELP}", add_help=False,
                       prefix_chars="\0")  # no option prefix: every token, even --help, is a plain value
    p.add_argument("argv", nargs=argparse.REMAINDER)
    p.set_defaults(func=run)
    return p
