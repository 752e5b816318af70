"""Search-K-MSHC and certify:  python search.py --config configs/search/tiny.yaml

Modes (``--mode``): ``cold`` searches from all heads (``--semantics keep|paper``); ``warm``
refines a train.py run (``--from_run runs/<name>``, reads its gates.json and experiment);
``verify`` writes a certificate for any circuit JSON (``--circuit PATH``). Every config field
can be overridden on the command line, e.g. ``--epsilon 0.8 --experiment.limit 300``.
``--exclude CIRCUIT.json`` (repeatable) searches outside the given circuits (docs/redundancy.md).
Outputs: ``runs/<name>/circuit_searched.json`` (certificate embedded) and ``search_state.json``
(``--resume true`` continues an interrupted run to the same result; ``--overwrite true``
replaces one). Verify mode writes ``circuit_verified.json`` next to the circuit.
"""
from __future__ import annotations

import json
import sys

from jsonargparse import ActionConfigFile, ArgumentParser
from tqdm import tqdm

from kmshc.search.certificate import Certificate
from kmshc.search.run import SearchConfig, repeatable, run
from kmshc.cli import run_entry
from kmshc.types import config_errors


def parse(args: list[str] | None = None) -> SearchConfig:
    parser = ArgumentParser(description=__doc__.splitlines()[0], env_prefix="KMSHC_SEARCH", default_env=False)
    parser.add_argument("--config", action=ActionConfigFile, help="a YAML file from configs/search/")
    parser.add_class_arguments(SearchConfig, nested_key=None, fail_untyped=True)
    with config_errors("search config", "a UTF-8 YAML mapping of search fields (see configs/search/)"):
        ns = parser.instantiate(parser.parse_args(repeatable(sys.argv[1:] if args is None else args)))
    return SearchConfig(**{k: v for k, v in vars(ns).items() if k != "config"})


def summary(circ) -> dict:
    cert = Certificate.from_dict(circ.certificate) if circ.certificate else None
    return {"heads": list(circ.heads), "size": len(circ.heads), "method": circ.extra.get("method"),
            "evaluations": circ.evaluations, "wall_time_s": circ.extra.get("wall_time_s"),
            "verified": cert.verified if cert else None,
            "recovery": cert.circuit.recovery if cert else None,
            "recovery_lower": cert.circuit.lower if cert else None,
            "epsilon_range": cert.epsilon_range if cert else None,
            "failing_heads": cert.failing_heads if cert else None,
            "classes": {r.head: r.cls for r in cert.removals} if cert else {},
            "controls_failing": sum(not c.verified for c in cert.controls) if cert else None}


def main(args: list[str] | None = None) -> dict:
    cfg = parse(args)
    with tqdm(desc=f"search ({cfg.mode})", unit="eval", disable=not cfg.progress, file=sys.stderr) as bar:
        def progress(evaluations: int, size: int | None) -> None:
            bar.update(evaluations - bar.n)
            bar.set_postfix_str(f"|C|={size}" if size is not None else "")
        circ, path = run(cfg, on_progress=progress)
    result = {"circuit": str(path), **summary(circ)}
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    run_entry(main, sys.argv[1:])  # user errors: one line, exit 2; --debug shows the traceback
