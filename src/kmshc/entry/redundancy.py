"""``kmshc redundancy``: the command line of :mod:`kmshc.redundancy.run` (``kmshc search``'s
flags plus ``--out``, ``--max_circuits`` and ``--mix_points``; docs/redundancy.md)."""
from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from kmshc.entry import add_passthrough_parser
from kmshc.entry.configs import resolve_config_args


def parse(args: list[str]):
    """``(SearchConfig, {out, max_circuits, mix_points})`` from search.py's fields plus three more."""
    from jsonargparse import ActionConfigFile, ArgumentParser

    from kmshc.redundancy.run import __doc__ as doc
    from kmshc.search.config import SearchConfig
    from kmshc.types import config_errors
    p = ArgumentParser(prog="kmshc redundancy", description=doc.splitlines()[0], default_env=False)
    p.add_argument("--config", action=ActionConfigFile, help="a YAML file from configs/search/")
    p.add_argument("--out", type=str, required=True, help="the chain's folder: C1/, C2/, ..., redundancy.json")
    p.add_argument("--max_circuits", type=int, default=5, help="stop after this many circuits")
    p.add_argument("--mix_points", type=int, default=6, help="prefix sizes per direction in the mix plot")
    p.add_class_arguments(SearchConfig, nested_key=None, fail_untyped=True,
                          skip={"out", "exclude", "resume"})
    with config_errors("redundancy config", "a UTF-8 YAML mapping of search fields (see configs/search/)"):
        ns = vars(p.instantiate(p.parse_args(resolve_config_args(args))))
    extra = {k: ns.pop(k) for k in ("out", "max_circuits", "mix_points")}
    ns.pop("config", None)
    return SearchConfig(**ns), extra


def _main(args: argparse.Namespace) -> dict:
    from kmshc.redundancy.run import redundancy
    cfg, extra = parse(args.argv)
    res = redundancy(replace(cfg, progress=False), **extra)
    return {"out": res.out, "stop": res.stop, "why": res.why, "report": str(Path(res.out) / "report.md"),
            "circuits": [{"heads": list(f.heads), "verified": f.certificate.verified if f.certificate else None}
                         for f in res.circuits],
            "circuits_to_fail": res.analysis.circuits_to_fail if res.analysis else None}


def add_redundancy_parser(sub) -> None:
    add_passthrough_parser(sub, "redundancy", "find disjoint sufficient circuits one after another: "
                           "knock-out curve and mix plot (docs/redundancy.md)", _main)
