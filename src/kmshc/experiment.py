"""One description of "model + task + splits + scorer + ablation", shared by train, search and
compare, so that a circuit's ``config`` rebuilds exactly the data it was found on.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from functools import cached_property
from typing import Any

from kmshc.engine.ablation import ABLATIONS, DEFAULT_ABLATION, Ablation, make_ablation
from kmshc.engine.architectures import head_shape
from kmshc.engine.encoding import encode
from kmshc.engine.device import parse_device_spec
from kmshc.engine.models import check_device_map, load_model
from kmshc.engine.scoring import SCORERS, Scorer
from kmshc.tasks import GENERATED_TASKS, make_task, split_task
from kmshc.tasks.fresh import FreshItems, unused_file_items
from kmshc.tasks.base import Task, merge_splits
from kmshc.tasks.defects import check_on_defect, screen, skipped_summary
from kmshc.types import KmshcError


@dataclass
class Experiment:
    """Everything that defines ``S(·)``.

    Args:
        model: ``smollm2-135m``, ``tiny-<arch>``, a ``.gguf`` path, a folder or a HF name.
        task: a generated family (``grammar``, ``arithmetic``, ``word_problems``, ``ioi``,
            ``greater_than``, ``induction``), ``blimp`` or ``labels``.
        data: jsonl path for ``blimp``/``labels``.
        n: number of generated items (generated tasks only).
        limit: use at most this many items, after the seeded shuffle.
        task_args: extra generator arguments, e.g. ``{"preset": "paper", "ops": "+-"}``.
        seed: seeds the generator, the split and resample pairing.
        ablation: ``zero``, ``mean``, ``resample`` or ``counterfactual`` (tasks with
            counterfactuals only); ``per_position`` for mean.
        on_defect: ``skip`` (default) leaves out defective items of a data file (identical
            sentences or tokens) and records them in :attr:`data_skipped`; ``error`` stops at the first.
        device: where the model computes, ``auto|cpu|cuda|cuda:N`` (auto: CUDA when present).
        device_map: spread the model over several devices instead (accelerate: ``auto`` or
            module name -> device); overrides ``device``. Neither field changes ``S(·)`` beyond
            float rounding, so neither enters :meth:`result_dict`.
    """

    model: str = "smollm2-135m"
    dtype: str = "float32"
    task: str = "grammar"
    data: str | None = None
    labels: list[str] | None = None
    n: int | None = None
    limit: int | None = None
    task_args: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    split_fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)
    scorer: str = "pair_logprob"
    ablation: str = DEFAULT_ABLATION
    per_position: bool = False
    probe_dim: int = 3
    batch_size: int = 32
    trust_remote_code: bool = False
    on_defect: str = "skip"
    device: str = "auto"
    device_map: str | dict[str, Any] | None = None

    def __post_init__(self) -> None:
        _check_fields(self)
        self.split_fractions = tuple(self.split_fractions)  # JSON gives a list; keep equality with the original
        if self.scorer not in SCORERS:
            raise KmshcError(f"field 'scorer': expected one of {', '.join(SCORERS)}, got {self.scorer!r}")
        if self.ablation not in ABLATIONS:
            raise KmshcError(f"field 'ablation': expected one of {', '.join(ABLATIONS)}, got {self.ablation!r}")
        check_on_defect(self.on_defect, "field 'on_defect'")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def result_dict(self) -> dict[str, Any]:
        """:meth:`to_dict` without the fields that say where it runs: what decides the scores
        (e.g. a search's resume fingerprint, so a run may resume on another device)."""
        return {k: v for k, v in self.to_dict().items() if k not in PLACEMENT_FIELDS}

    @classmethod
    def from_dict(cls, d: Any, where: str = "experiment") -> "Experiment":
        """Rebuild from :meth:`to_dict` output (e.g. a circuit's ``config.experiment``); bad input -> KmshcError."""
        if not isinstance(d, dict):
            raise KmshcError(f"{where}: expected an object with experiment fields, got {type(d).__name__}")
        unknown = sorted(str(k) for k in set(d) - {f.name for f in fields(cls)})
        if unknown:
            raise KmshcError(f"{where}: unknown field(s) {', '.join(unknown)}; expected some of "
                             f"{', '.join(f.name for f in fields(cls))}")
        try:
            return cls(**d)
        except KmshcError as e:
            raise KmshcError(f"{where}: {e}") from None

    @cached_property
    def task_data(self) -> Task:
        """The whole task before splitting, defective items left out (see :func:`screen`: for a data
        file this loads the model, whose tokenizer decides which pairs tokenise identically)."""
        task = make_task(self.task, data=self.data, seed=self.seed, n=self.n, labels=self.labels,
                         on_defect=self.on_defect, **self.task_args)
        return screen(task, lambda: self.loaded[1], self.on_defect)

    @cached_property
    def splits(self) -> dict[str, Task]:
        return split_task(self.task_data, seed=self.seed, fractions=tuple(self.split_fractions), limit=self.limit)

    @property
    def data_skipped(self) -> dict[str, Any]:
        """The defective items left out of the whole data file (before ``limit``), for every output."""
        return skipped_summary(self.task_data)

    @property
    def task_name(self) -> str:
        return self.splits["train"].name

    @cached_property
    def loaded(self):
        return load_model(self.model, dtype=self.dtype, trust_remote_code=self.trust_remote_code,
                          device=self.device, device_map=self.device_map)

    @property
    def shape(self) -> tuple[int, int]:
        return head_shape(self.loaded[0])

    @cached_property
    def ablation_values(self) -> Ablation:
        """Fitted once on the train split and shared by every scorer of this experiment."""
        model, tok = self.loaded
        self.check_ablation(self.ablation, field="field 'ablation'")
        train = encode(self.splits["train"], tok) if self.ablation == "mean" else None
        return make_ablation(self.ablation, model, train, per_position=self.per_position, seed=self.seed)

    def check_ablation(self, ablation: str, *, field: str) -> None:
        """Raise, naming ``field``, when ``ablation`` is ``counterfactual`` and the task has none."""
        if ablation == "counterfactual" and not self.splits["train"].has_counterfactuals:
            raise KmshcError(f"{field}: task {self.task_name!r} has no counterfactuals, so 'counterfactual' "
                             "cannot be used on it; use zero, mean or resample")

    def with_ablation(self, ablation: str) -> "Experiment":
        """The same experiment under another ``ablation`` (e.g. ``counterfactual`` beside ``mean``),
        sharing whatever this one has already loaded (model, task, splits): no second model load."""
        other = replace(self, ablation=ablation)
        for name in ("task_data", "splits", "loaded"):
            if name in self.__dict__:
                other.__dict__[name] = self.__dict__[name]
        return other

    def fresh_items(self) -> FreshItems:
        """Test items that no split used, for a certificate that needs more (:mod:`kmshc.tasks.fresh`):
        new draws of a generated task, or a data file's items past ``limit``."""
        if self.task in GENERATED_TASKS:
            return FreshItems(self.task_data.items, generate=self._generate, seed=self.seed)
        used = sum((part.items for part in self.splits.values()), ())
        return FreshItems(used, spare=unused_file_items(self.task_data, seed=self.seed, limit=self.limit),
                          seed=self.seed)

    def _generate(self, seed: int, n: int) -> Task:
        return make_task(self.task, seed=seed, n=n, **self.task_args)

    def scorer_for(self, split: str, items: tuple | None = None, *, distributed: bool = False) -> Scorer:
        """``S(·)`` on ``split`` (``train``, ``val``, ``test``, or ``all``: every item after ``limit``,
        in that order); ``items``: only these of its items (adaptive decisions score a split in chunks).

        ``distributed``: shard each evaluation's examples over the torch.distributed ranks (every
        rank must then call the scorer with the same masks, as a search does)."""
        if split not in ("train", "val", "test", "all"):
            raise KmshcError(f"split: expected train, val, test or all, got {split!r}")
        model, tok = self.loaded
        task = merge_splits(self.task_data, self.splits) if split == "all" else self.splits[split]
        task = task if items is None else replace(task, items=tuple(items))
        return Scorer(model, tok, task, scorer=self.scorer, ablation=self.ablation_values,
                      train=self.splits["train"], batch_size=self.batch_size, probe_dim=self.probe_dim,
                      seed=self.seed, distributed=distributed)


PLACEMENT_FIELDS = ("device", "device_map")

# field -> (accepted types, description); checked so that a hand-edited JSON/YAML value fails
# here, naming the field, rather than deep inside tokenisation or model loading.
_FIELD_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "model": ((str,), "a string"), "dtype": ((str,), "a string"), "task": ((str,), "a string"),
    "data": ((str, type(None)), "a path string or null"), "labels": ((list, tuple, type(None)), "a list of strings or null"),
    "n": ((int, type(None)), "a positive integer or null"), "limit": ((int, type(None)), "a positive integer or null"),
    "task_args": ((dict,), "an object"), "seed": ((int,), "an integer"),
    "split_fractions": ((list, tuple), "three fractions summing to 1"), "scorer": ((str,), "a string"),
    "ablation": ((str,), "a string"), "per_position": ((bool,), "true or false"),
    "probe_dim": ((int,), "a positive integer"), "batch_size": ((int,), "a positive integer"),
    "trust_remote_code": ((bool,), "true or false"), "on_defect": ((str,), "skip or error"),
    "device": ((str,), "auto, cpu, cuda or cuda:N"),
    "device_map": ((str, dict, type(None)), "auto, an object of module name -> device, or null"),
}


def _check_fields(exp: "Experiment") -> None:
    for name, (types, what) in _FIELD_TYPES.items():
        v = getattr(exp, name)
        if not isinstance(v, types) or (isinstance(v, bool) and bool not in types):
            raise KmshcError(f"field '{name}': expected {what}, got {v!r}")
    for name in ("n", "limit", "probe_dim", "batch_size"):
        v = getattr(exp, name)
        if v is not None and v <= 0:
            raise KmshcError(f"field '{name}': expected a positive integer, got {v}")
    if exp.labels is not None and not all(isinstance(w, str) for w in exp.labels):
        raise KmshcError(f"field 'labels': expected a list of strings, got {exp.labels!r}")
    if not all(isinstance(k, str) for k in exp.task_args):
        raise KmshcError(f"field 'task_args': keys must be strings, got {list(exp.task_args)!r}")
    for name, check in (("device", parse_device_spec), ("device_map", check_device_map)):
        try:
            check(getattr(exp, name))
        except KmshcError as e:  # name the field, as every other check here does
            raise KmshcError(f"field '{name}': {e}") from None
    fr = exp.split_fractions
    if len(fr) != 3 or not all(isinstance(f, (int, float)) and not isinstance(f, bool) and 0 <= f <= 1 for f in fr) \
            or abs(sum(fr) - 1) > 1e-6:
        raise KmshcError(f"field 'split_fractions': expected three fractions summing to 1, got {fr!r}")
