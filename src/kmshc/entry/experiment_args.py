"""The experiment flags of the verbs that take :class:`~kmshc.experiment.Experiment`'s fields
(``kmshc score``, ``kmshc rank``, ``kmshc tasks``): one declaration per field, whose default is
the field's own, so a verb cannot drift from the experiment it builds."""
from __future__ import annotations

import argparse
import json
from dataclasses import MISSING, fields
from typing import Any

from kmshc.engine.ablation import ABLATIONS
from kmshc.engine.scoring import SCORERS
from kmshc.experiment import Experiment
from kmshc.tasks import TASKS

DTYPES = ("float32", "bfloat16", "auto")


def json_object(text: str) -> dict:
    """An argument that is a JSON object: ``--task_args``, and ``--device_map`` when it is not a name."""
    try:
        d = json.loads(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"not a JSON object ({e})") from None
    if not isinstance(d, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return d


def device_map(text: str) -> str | dict:
    """``--device_map``: a strategy name such as ``auto``, or a JSON object."""
    return json_object(text) if text.lstrip().startswith("{") else text


FLAGS: dict[str, dict[str, Any]] = {
    "model": {"help": "a Hugging Face id, a local folder, a GGUF file, or tiny-<arch>"},
    "dtype": {"choices": DTYPES, "help": "auto: bf16 where the model computes natively in it (CUDA, or a CPU "
                                         "with avx512_bf16/amx_bf16), else float32"},
    "task": {"choices": TASKS},
    "data": {"help": "jsonl file for --task blimp / labels"},
    "labels": {"nargs": "+", "help": "label words for --task labels, e.g. ' True' ' False'"},
    "n": {"type": int, "help": "number of generated items (generated tasks)"},
    "limit": {"type": int, "help": "use at most N items (taken after a seeded shuffle)"},
    "task_args": {"type": json_object, "help": 'generator arguments as a JSON object, e.g. \'{"phenomena": '
                                              '["determiner_noun"]}\' (grammar) or \'{"preset": "paper"}\' (arithmetic)'},
    "seed": {"type": int},
    "scorer": {"choices": SCORERS},
    "ablation": {"choices": ABLATIONS, "help": "counterfactual: patch from each item's own counterfactual "
                                               "(ioi, greater_than, induction)"},
    "per_position": {"action": "store_true", "help": "mean ablation per position"},
    "batch_size": {"type": int, "help": "examples per forward pass"},
    "device": {"help": "auto|cpu|cuda|cuda:N where the model runs (auto: CUDA when present)"},
    "device_map": {"type": device_map, "help": "spread a model too large for one device: auto (accelerate), or a "
                                               "JSON object of module name -> device; overrides --device"},
    "on_defect": {"choices": ("skip", "error"), "help": "a defective item of --data (identical sentences or "
                                                        "tokens): skip it with a warning and record it in the "
                                                        "output (default), or stop with an error"},
}


def experiment_defaults() -> dict[str, Any]:
    """``{field: default}`` of :class:`Experiment`."""
    return {f.name: f.default if f.default is not MISSING else f.default_factory() for f in fields(Experiment)}


def add_experiment_arguments(p: argparse.ArgumentParser, names: list[str], **overrides: dict[str, Any]) -> None:
    """Add ``--<field>`` for each of ``names``, its default :class:`Experiment`'s; ``overrides``
    (``task={"required": True}``) change one flag's keywords for one verb."""
    defaults = experiment_defaults()
    for name in names:
        kw = {**FLAGS[name], **overrides.get(name, {})}
        if kw.get("action") != "store_true" and not kw.get("required"):
            kw.setdefault("default", defaults[name])
        p.add_argument(f"--{name}", **kw)
