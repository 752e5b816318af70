"""kmshc: learn, search and certify minimal sufficient attention-head circuits.

The public API (imported on first use, so ``import kmshc`` stays cheap)::

    Experiment        model + task + splits + scorer + ablation: defines S(·)
    learn_gates       fit hard-concrete head gates with Lightning -> LearnedGates
    rank_heads        rank heads without training (attribution, forward selection) -> LearnedGates
    search_circuit    Search-K-MSHC, warm from learned gates or cold -> Circuit
    certify_circuit   the held-out certificate of a circuit -> Circuit
    only_heads        context manager: run a model with only a circuit's heads
    Circuit           a head set with provenance; Circuit.load(path) / circuit.save(path)
    load_model        a Hugging Face / GGUF / embedded / tiny model and its tokenizer
    report            write a run folder's report.html (kmshc report RUN_DIR)
    KmshcError        every user error

``search_circuit`` is not called ``search`` because :mod:`kmshc.search` is the subpackage of
search algorithms (a function of that name would be shadowed once the subpackage is imported).
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "Experiment": "kmshc.experiment",
    "LearnedGates": "kmshc.api",
    "learn_gates": "kmshc.api",
    "rank_heads": "kmshc.api",
    "search_circuit": "kmshc.api",
    "certify_circuit": "kmshc.api",
    "only_heads": "kmshc.api",
    "Circuit": "kmshc.types",
    "KmshcError": "kmshc.types",
    "load_model": "kmshc.models",
    "report": "kmshc.view",
}
__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'kmshc' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
