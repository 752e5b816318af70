"""The ``kmshc`` command: one verb per job, one argument style (underscores, ``--per_position``).

    kmshc score    accuracy of the model with only some heads kept
    kmshc train    learn head gates (``kmshc train fit --config configs/train/tiny.yaml``)
    kmshc search   search a minimal sufficient head set and certify it
    kmshc verify   certify a circuit JSON (``--circuit PATH``)
    kmshc compare  compare circuits across methods, tasks and seeds
    kmshc tasks    survey which tasks the model can do (full vs ablated, per task)
    kmshc show     print a circuit file and its certificate
    kmshc rank     rank heads without training (attribution patching)
    kmshc toy      train a tiny model whose induction circuit is known
    kmshc redundancy  disjoint sufficient circuits one after another: knock-out curve, mixes
    kmshc report   write RUN_DIR/report.html, one self-contained page that shows a circuit

User errors (:class:`KmshcError`) print one clear line and exit with status 2; ``--debug``
(before the verb, or anywhere among a verb's arguments) shows the traceback instead.
"""
from __future__ import annotations

import argparse
import json
import sys

from kmshc.entry.compare import add_compare_parser
from kmshc.entry.rank import add_rank_parser
from kmshc.entry.redundancy import add_redundancy_parser
from kmshc.entry.score import add_score_parser
from kmshc.entry.search import add_search_parser, add_verify_parser
from kmshc.entry.show import add_show_parser
from kmshc.entry.tasks import add_tasks_parser
from kmshc.entry.toy import add_toy_parser
from kmshc.entry.train import add_train_parser
from kmshc.types import KmshcError
from kmshc.view.write import add_report_parser


def build_parser() -> argparse.ArgumentParser:
    """Every verb is registered here, one line each; its module owns its arguments."""
    p = argparse.ArgumentParser(prog="kmshc", description=__doc__.splitlines()[0])
    p.add_argument("--debug", action="store_true", help="show tracebacks for user errors")
    sub = p.add_subparsers(dest="command", required=True, metavar="VERB")
    add_score_parser(sub)
    add_train_parser(sub)
    add_search_parser(sub)
    add_verify_parser(sub)
    add_compare_parser(sub)
    add_tasks_parser(sub)
    add_show_parser(sub)
    add_rank_parser(sub)
    add_toy_parser(sub)
    add_redundancy_parser(sub)
    add_report_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run one verb; returns the exit status (0, or 2 for a user error)."""
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    if "--debug" in getattr(args, "argv", ()):  # a pass-through verb: --debug is ours, not its parser's
        args.argv = [a for a in args.argv if a != "--debug"]
        args.debug = True
    try:
        result = args.func(args)
    except KmshcError as e:
        if args.debug:
            raise
        print(f"kmshc: error: {e}", file=sys.stderr)
        return 2
    if result is not None:
        print(json.dumps(result))
    return 0
