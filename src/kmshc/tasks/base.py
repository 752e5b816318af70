"""Task containers and seeded splits."""
from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from typing import Callable, Literal

from kmshc.types import KmshcError


@dataclass(frozen=True)
class PairItem:
    """A minimal pair: the model should give ``good`` a higher log-probability than ``bad``.

    ``counterfactual`` (optional): ``(cf_good, cf_bad)``, the corrupted input that activation
    patching takes head outputs from, row for row. Each must tokenise to the same length as
    ``good`` and ``bad`` respectively, so that positions align.
    """

    good: str
    bad: str
    where: str = field(default="", compare=False)  # "file:line", for error messages
    line: int = field(default=0, compare=False)  # the line of its data file; 0 for generated items
    counterfactual: tuple[str, str] | None = None


@dataclass(frozen=True)
class LabelItem:
    """A prompt whose next token should be ``labels[label]`` of its task."""

    prompt: str
    label: int
    where: str = field(default="", compare=False)
    line: int = field(default=0, compare=False)


@dataclass(frozen=True)
class Task:
    """A named list of items. ``kind`` is ``"pairs"`` or ``"labels"``; ``labels`` holds the label words.

    ``skipped`` lists the defective items of the source that were left out (see
    :mod:`kmshc.tasks.defects`); every split of the task carries the same list.
    """

    name: str
    kind: Literal["pairs", "labels"]
    items: tuple
    labels: tuple[str, ...] = ()
    source: str = ""
    skipped: tuple = ()  # of kmshc.tasks.defects.Defect

    def __len__(self) -> int:
        return len(self.items)

    @property
    def has_counterfactuals(self) -> bool:
        """Whether every item carries a counterfactual (what the ``counterfactual`` ablation needs)."""
        return bool(self.items) and all(getattr(it, "counterfactual", None) is not None for it in self.items)

    def subset(self, n: int | None) -> "Task":
        return self if n is None else replace(self, items=self.items[:n])


SPLITS = ("train", "val", "test")


def split_task(task: Task, seed: int = 0, fractions: tuple[float, float, float] = (0.6, 0.2, 0.2),
               limit: int | None = None) -> dict[str, Task]:
    """Shuffle with ``seed`` and cut into train/val/test by ``fractions`` (default 60/20/20).

    ``limit`` caps the total number of items used, taken *after* the shuffle so that a small
    limit still samples the whole file.
    """
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise KmshcError(f"split fractions must be three non-negative numbers summing to 1, got {fractions}")
    items = list(task.items)
    random.Random(seed).shuffle(items)
    if limit is not None:
        if limit <= 0:
            raise KmshcError(f"--limit must be positive, got {limit}")
        items = items[:limit]
    n = len(items)
    n_train = int(round(fractions[0] * n))
    n_val = int(round(fractions[1] * n))
    parts = {"train": items[:n_train], "val": items[n_train:n_train + n_val], "test": items[n_train + n_val:]}
    for name, part in parts.items():
        if not part and fractions[SPLITS.index(name)] > 0:
            raise KmshcError(f"task {task.name!r}: {n} items are too few for a 60/20/20 split "
                             f"(the {name} split is empty); use more data or a larger --limit")
    return {k: replace(task, items=tuple(v)) for k, v in parts.items()}


def merge_splits(task: Task, splits: dict[str, Task]) -> Task:
    """``task`` holding every item of ``splits`` (train, val, test in order): all items left after ``limit``."""
    return replace(task, items=sum((splits[k].items for k in SPLITS), ()))


def distinct_items(draw: Callable[[random.Random], "PairItem | None"], n: int, seed: int) -> tuple["PairItem", ...]:
    """Up to ``n`` distinct items of ``draw(rng)`` in draw order, from one ``random.Random(seed)``.

    A draw may return ``None`` to skip (no valid item from those numbers); duplicates are
    redrawn. At most ``50·n`` draws, so a generator with fewer than ``n`` possible items stops.
    """
    rng = random.Random(seed)
    items: dict[PairItem, None] = {}
    for _ in range(n * 50):
        if len(items) >= n:
            break
        item = draw(rng)
        if item is not None:
            items.setdefault(item)
    return tuple(items)

