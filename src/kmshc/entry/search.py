"""``kmshc search`` and ``kmshc verify``: Search-K-MSHC and its certificate (what search.py runs).

``kmshc search --config configs/search/tiny.yaml`` runs a mode (``--mode``): ``cold`` searches
from all heads (``--semantics keep|paper``); ``warm`` refines a training run (``--from_run
runs/<name>``: its gates.json and experiment); ``verify`` writes a certificate for any circuit
JSON. ``kmshc verify CIRCUIT`` (or ``--circuit CIRCUIT``) is that last mode. Every config field can be overridden on
the command line, e.g. ``--epsilon 0.8 --experiment.limit 300``. ``--exclude CIRCUIT.json``
(repeatable) searches outside the given circuits (docs/redundancy.md). Outputs:
``runs/<name>/circuit_searched.json`` (certificate embedded) and ``search_state.json``
(``--resume true`` continues an interrupted run to the same result; ``--overwrite true``
replaces one). Verify writes ``circuit_verified.json`` next to the circuit.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any, Optional

from kmshc.entry import add_passthrough_parser
from kmshc.entry.configs import resolve_config_args

DESCRIPTIONS = {"search": "search a minimal sufficient head set and certify it (search.py)",
                "verify": "certify a circuit JSON on held-out data: kmshc verify CIRCUIT [--config ...]"}

if TYPE_CHECKING:
    from kmshc.search.config import SearchConfig
    from kmshc.types import Circuit


def parse(args: list[str] | None = None, *, verb: str = "search") -> "SearchConfig":
    """A :class:`~kmshc.search.config.SearchConfig` from command-line ``args`` (``--config`` files
    first); ``verb`` names the command in usage and help, and ``verify`` takes the circuit as its
    positional argument (``kmshc verify CIRCUIT``, the same as ``--circuit CIRCUIT``)."""
    from jsonargparse import ActionConfigFile, ArgumentParser

    from kmshc.search.config import RENAMED, SearchConfig, legacy_fields
    from kmshc.types import KmshcError, config_errors
    parser = ArgumentParser(prog=f"kmshc {verb}", description=DESCRIPTIONS[verb], env_prefix="KMSHC_SEARCH",
                            default_env=False)
    parser.add_argument("--config", action=ActionConfigFile, help="a YAML file from configs/search/")
    if verb == "verify":
        parser.add_argument("circuit_path", nargs="?", metavar="CIRCUIT", help="the circuit JSON file to certify")
    parser.add_class_arguments(SearchConfig, nested_key=None, fail_untyped=True)
    for old in RENAMED:  # a config or command line that still says `tau` sets the gate threshold
        parser.add_argument(f"--{old}", type=Optional[float], help=argparse.SUPPRESS)
    args = repeatable(resolve_config_args(sys.argv[1:] if args is None else args))
    with config_errors("search config", "a UTF-8 YAML mapping of search fields (see configs/search/)"):
        ns = parser.instantiate(parser.parse_args(args))
    fields = legacy_fields({k: v for k, v in vars(ns).items() if k not in ("config", "circuit_path")})
    path = getattr(ns, "circuit_path", None)
    if path is not None and fields.get("circuit") not in (None, path):
        raise KmshcError(f"kmshc verify: two circuits given, {path} and --circuit {fields['circuit']}; give one")
    if path is not None:
        fields["circuit"] = path
    return SearchConfig(**fields)


def repeatable(args: list[str], flag: str = "--exclude") -> list[str]:
    """``--exclude A --exclude B`` (or ``--exclude=A``) as jsonargparse's append form ``--exclude+ A``,
    so that a list flag repeats like any command-line flag; a JSON list (``--exclude [A, B]``) is kept."""
    out, i = [], 0
    while i < len(args):
        a = args[i]
        if a == flag and i + 1 < len(args) and not args[i + 1].lstrip().startswith("["):
            out += [flag + "+", args[i + 1]]
            i += 2
            continue
        if a.startswith(flag + "=") and not a[len(flag) + 1:].lstrip().startswith("["):
            a = flag + "+=" + a[len(flag) + 1:]
        out.append(a)
        i += 1
    return out


def summary(circ: "Circuit") -> dict[str, Any]:
    """What a person reads after a search: the heads, the cost and the certificate's verdict."""
    from kmshc.search.certificate import Certificate
    from kmshc.search.repair import removed_heads
    cert = Certificate.from_dict(circ.certificate) if circ.certificate else None
    return {"heads": list(circ.heads), "size": len(circ.heads), "method": circ.extra.get("method"),
            "evaluations": circ.evaluations, "example_forwards": circ.example_forwards,
            "wall_time_s": circ.extra.get("wall_time_s"),
            "verified": cert.verified if cert else None,
            "verdict": cert.verdict if cert else None,
            "test_items": cert.n if cert else None,
            "repairs": removed_heads(circ.extra.get("repairs", [])),
            "recovery": cert.circuit.recovery if cert else None,
            "recovery_lower": cert.circuit.lower if cert else None,
            "epsilon_range": cert.epsilon_range if cert else None,
            "failing_heads": cert.failing_heads if cert else None,
            "classes": {r.head: r.cls for r in cert.removals} if cert else {},
            "controls_failing": sum(not c.verified for c in cert.controls) if cert else None}


def main(args: list[str] | None = None, *, verb: str = "search") -> dict[str, Any]:
    """Run one search (or verify) from command-line ``args``; prints and returns the summary.

    Under ``torchrun --nproc_per_node P`` every rank runs the search, each scoring a share of
    every evaluation's examples; the result equals the one-process run (docs/scaling.md)."""
    from tqdm import tqdm

    from kmshc.engine.distributed import is_main, process_group
    from kmshc.search.run import run
    cfg = parse(args, verb=verb)
    with process_group():
        bars: list[tqdm] = []  # drawn at the first evaluation, so an error found before it prints alone

        def progress(evaluations: int, size: int | None) -> None:
            if not bars:
                bars.append(tqdm(desc=f"search ({cfg.mode})", unit="eval", file=sys.stderr,
                                 disable=not (cfg.progress and is_main())))
            bars[0].update(evaluations - bars[0].n)
            bars[0].set_postfix_str(f"|C|={size}" if size is not None else "")
        try:
            circ, path = run(cfg, on_progress=progress)
        finally:
            for bar in bars:
                bar.close()
        result = {"circuit": str(path), **summary(circ)}
        if is_main():
            print(json.dumps(result, indent=1))
    return result


def verify_argv(argv: list[str]) -> list[str]:
    """search's arguments for verify mode; ``--mode verify`` last, so no config file can override it."""
    return [*argv, "--mode", "verify"]


def _search(args: argparse.Namespace) -> None:
    main(args.argv)  # prints its own summary


def _verify(args: argparse.Namespace) -> None:
    main(verify_argv(args.argv), verb="verify")


def add_search_parser(sub) -> None:
    add_passthrough_parser(sub, "search", DESCRIPTIONS["search"], _search)


def add_verify_parser(sub) -> None:
    add_passthrough_parser(sub, "verify", DESCRIPTIONS["verify"], _verify)
