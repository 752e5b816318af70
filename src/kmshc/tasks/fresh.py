"""Fresh test items: a stream of items that no split of an experiment used (for certify-until-decided).

* Generated tasks draw new batches from the same generator at seeds derived from the experiment's
  seed and the batch number, and keep only items whose prompts no earlier item had (train, val,
  test, or an earlier round). The stream is deterministic, so a resumed certificate draws the same
  items again.
* Data files give their items that no split used: those past ``limit`` in the split's shuffle.
  When they run out the stream ends, and the certificate says how many it still had.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Callable, Iterable

from kmshc.tasks.base import Task


def item_key(item) -> tuple:
    """What makes two items the same test item: their prompts, whatever their counterfactual or origin."""
    return (item.good, item.bad) if hasattr(item, "good") else (item.prompt, item.label)


def unused_file_items(task: Task, *, seed: int, limit: int | None) -> tuple:
    """The items of a whole data file that :func:`~kmshc.tasks.base.split_task` with ``seed`` and
    ``limit`` leaves out, in its shuffle order (none when ``limit`` is None)."""
    items = list(task.items)
    random.Random(seed).shuffle(items)  # the same shuffle as split_task
    return tuple(items[limit:]) if limit is not None else ()


@dataclass
class FreshItems:
    """Items never used before, ``take(count)`` at a time.

    Args:
        used: every item the experiment's splits hold (and any earlier round's).
        generate: ``(seed, n) -> Task`` for a generated family; None for a data file.
        spare: a data file's unused items (:func:`unused_file_items`).
        seed: the experiment's seed; batch ``j`` is drawn at a seed derived from it and ``j``.
    """

    used: Iterable
    generate: Callable[[int, int], Task] | None = None
    spare: tuple = ()
    seed: int = 0
    _seen: set = field(default_factory=set, init=False)
    _batch: int = field(default=0, init=False)
    _pending: list = field(default_factory=list, init=False)
    _spare_at: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self._seen = {item_key(it) for it in self.used}

    @property
    def remaining(self) -> int | None:
        """Unused items a data file still has; None for a generator (it draws more as asked)."""
        return None if self.generate is not None else len(self.spare) - self._spare_at

    def take(self, count: int) -> tuple:
        """Up to ``count`` new items (fewer only when the source runs dry)."""
        out: list = []
        while len(out) < count:
            it = self._next()
            if it is None:
                break
            out.append(it)
        return tuple(out)

    def _next(self):
        while True:
            if self.generate is None:
                if self._spare_at >= len(self.spare):
                    return None
                it = self.spare[self._spare_at]
                self._spare_at += 1
            else:
                if not self._pending and not self._refill():
                    return None
                it = self._pending.pop(0)
            if item_key(it) not in self._seen:
                self._seen.add(item_key(it))
                return it

    def _refill(self, batch: int = 512, dry: int = 4) -> bool:
        """Draw batches until one brings a new item; False after ``dry`` batches in a row bring none
        (the generator has no more distinct items)."""
        for _ in range(dry):
            self._batch += 1
            seed = random.Random(f"kmshc-fresh:{self.seed}:{self._batch}").getrandbits(31)
            new = [it for it in self.generate(seed, batch).items if item_key(it) not in self._seen]
            if new:
                self._pending = new
                return True
        return False
