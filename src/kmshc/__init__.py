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

The code sits in one folder per step: :mod:`kmshc.engine` (models, hooks, ablation, scoring),
:mod:`kmshc.train` (learn), :mod:`kmshc.rank`, :mod:`kmshc.search` (search and certify),
:mod:`kmshc.compare`, :mod:`kmshc.view`, :mod:`kmshc.redundancy`, :mod:`kmshc.toy`, and
:mod:`kmshc.entry` (one module per CLI verb). Module paths of the previous flat layout
(such as ``scoring`` or ``module`` under ``kmshc``) still import, as the same module objects, through
``_MOVED``: old scripts, configs and pickles keep loading for one release.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
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
    "load_model": "kmshc.engine.models",
    "report": "kmshc.view",
}
__all__ = ["__version__", *_LAZY]

# old module path -> its module now; deprecated, removed in the next release
_MOVED: dict[str, str] = {
    "kmshc.show": "kmshc.entry.show",
    "kmshc.survey": "kmshc.entry.tasks",
    "kmshc.curves": "kmshc.compare.curves",
    "kmshc.curve_runs": "kmshc.compare.curve_runs",
    "kmshc.ground_truth": "kmshc.toy.ground_truth",
    "kmshc.redundancy_run": "kmshc.redundancy.run",
    "kmshc.redundancy_report": "kmshc.redundancy.report",
    "kmshc.attribution": "kmshc.rank.attribution",
    "kmshc.forward_selection": "kmshc.rank.forward_selection",
    "kmshc.rank_cli": "kmshc.rank.run",
    "kmshc.rank_compare": "kmshc.compare.rankings",
    "kmshc.gates": "kmshc.train.gates",
    "kmshc.objectives": "kmshc.train.objectives",
    "kmshc.module": "kmshc.train.module",
    "kmshc.datamodule": "kmshc.train.datamodule",
    "kmshc.train_utils": "kmshc.train.run",
    "kmshc.plots": "kmshc.train.plots",
    "kmshc.ablation": "kmshc.engine.ablation",
    "kmshc.architectures": "kmshc.engine.architectures",
    "kmshc.cost": "kmshc.engine.cost",
    "kmshc.device": "kmshc.engine.device",
    "kmshc.diagnostics": "kmshc.engine.diagnostics",
    "kmshc.distributed": "kmshc.engine.distributed",
    "kmshc.encoding": "kmshc.engine.encoding",
    "kmshc.hooks": "kmshc.engine.hooks",
    "kmshc.memory": "kmshc.engine.memory",
    "kmshc.models": "kmshc.engine.models",
    "kmshc.prefix": "kmshc.engine.prefix",
    "kmshc.probe": "kmshc.engine.probe",
    "kmshc.quiet": "kmshc.engine.quiet",
    "kmshc.readout": "kmshc.engine.readout",
    "kmshc.scoring": "kmshc.engine.scoring",
    "kmshc.tiny": "kmshc.engine.tiny",
}


class _MovedFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Import ``kmshc.<old path>`` as the module that now holds its code (one module object,
    so classes keep their identity and ``isinstance`` holds across both paths)."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname in _MOVED:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        module = importlib.import_module(_MOVED[spec.name])
        spec.loader_state = module.__spec__  # importlib sets __spec__ to ours; exec_module restores it
        return module

    def exec_module(self, module):
        module.__spec__ = module.__spec__.loader_state


if not any(isinstance(f, _MovedFinder) for f in sys.meta_path):
    sys.meta_path.insert(0, _MovedFinder())


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'kmshc' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
