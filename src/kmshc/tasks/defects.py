"""Defective items in task data: what they are, the ``on_defect`` policy, and the one-line report.

A *broken* file (not UTF-8, malformed JSON, empty, a missing field) is always an error, raised by
the readers in :mod:`kmshc.tasks.files`: the file is damaged. A *defective item* is readable but
cannot test the model: its two sentences are identical (BLiMP's ``passive_1`` has 2 such pairs,
``principle_A_case_2`` has 5), or they tokenise identically under the model's tokenizer (e.g. they
differ only in case and the tokenizer is uncased). Under ``on_defect="skip"`` (the default) such
items are left out before the seeded split, listed in :attr:`Task.skipped`, reported in one
warning line per file and recorded in every output; under ``"error"`` the first one is an error
naming its file and line. A label word of several tokens stays an error under both policies: it
comes from ``--labels``, not from one item, and dropping it would silently change the task.
"""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, replace
from typing import Any, Callable

from kmshc.tasks.base import PairItem, Task
from kmshc.types import KmshcError

ON_DEFECT = ("skip", "error")
IDENTICAL_TEXT = "identical sentences"
IDENTICAL_TOKENS = "identical tokens"
SHOWN_LINES = 5  # line numbers listed in the warning; the outputs list them all

log = logging.getLogger("kmshc.data")


@dataclass(frozen=True)
class Defect:
    """One item left out: its ``line`` in the data file (for generated items, its 1-based index),
    why, and its text (the good sentence), so that a report shows what was dropped."""

    line: int
    reason: str
    text: str


def check_on_defect(value: Any, what: str = "on_defect") -> str:
    if value not in ON_DEFECT:
        raise KmshcError(f"{what}: expected one of {', '.join(ON_DEFECT)}, got {value!r}")
    return value


def text_tokens(tokenizer, text: str) -> list[int]:
    """Token ids of ``text`` without special tokens: what :func:`kmshc.engine.encoding.encode` scores."""
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def pair_defect(item: PairItem, tokenizer=None) -> str | None:
    """Why ``item`` cannot be a minimal pair (``IDENTICAL_TEXT``/``IDENTICAL_TOKENS``), or None.
    Without a ``tokenizer`` only the text is compared."""
    if item.good == item.bad:
        return IDENTICAL_TEXT
    if tokenizer is not None and text_tokens(tokenizer, item.good) == text_tokens(tokenizer, item.bad):
        return IDENTICAL_TOKENS
    return None


def defect_message(item: PairItem, reason: str, task_name: str, index: int) -> str:
    """The ``on_defect="error"`` message for defective pair ``index`` (0-based), naming its file and line."""
    where = item.where or f"task {task_name!r} item {index + 1}"
    if reason == IDENTICAL_TEXT:
        return f"{where}: 'sentence_good' and 'sentence_bad' are identical ({item.good!r})"
    return (f"{where}: the two sentences of the pair tokenise identically ({item.good!r} / {item.bad!r}); "
            "a minimal pair must differ in tokens")


def drop_defective_pairs(task: Task, tokenizer=None, on_defect: str = "skip") -> Task:
    """``task`` without its defective pairs, which are added to ``task.skipped``.

    Under ``on_defect="error"`` the first defective pair raises instead. Labels tasks are returned
    unchanged. A task left with no item is an error that says why.
    """
    check_on_defect(on_defect)
    if task.kind != "pairs":
        return task
    keep, found = [], list(task.skipped)
    for i, it in enumerate(task.items):
        reason = pair_defect(it, tokenizer)
        if reason is None:
            keep.append(it)
            continue
        if on_defect == "error":
            raise KmshcError(defect_message(it, reason, task.name, i))
        found.append(Defect(it.line or i + 1, reason, it.good))
    if not keep:
        raise KmshcError(f"{task.source or task.name}: no usable item left: all {len(found)} items are defective "
                         f"({_reasons(found)}; lines {_lines(found)}); nothing to score")
    return replace(task, items=tuple(keep), skipped=tuple(sorted(found, key=lambda d: d.line)))


def screen(task: Task, tokenizer: Callable[[], Any], on_defect: str = "skip") -> Task:
    """The whole task as it will be split: defective pairs under the model's tokenizer left out,
    and one warning line if anything was.

    Identical tokenisation can only be seen with the tokenizer, and the seeded split must come after
    the skipping (so that it is the same on every run); so this runs between loading and splitting.
    ``tokenizer`` is a getter, called only for pairs read from a file: generated pairs differ by
    construction (``encode`` still checks them), so their splits never need the model.
    """
    if task.kind == "pairs" and not task.source.startswith("generated:"):
        task = drop_defective_pairs(task, tokenizer(), on_defect)
    warn_skipped(task)
    return task


def warn_skipped(task: Task) -> None:
    """One warning line for a task with skipped items: count, reasons, first line numbers."""
    if task.skipped:
        total = len(task.items) + len(task.skipped)
        log.warning(f"warning: {task.source or task.name}: skipped {len(task.skipped)} of {total} items as "
                    f"defective ({_reasons(task.skipped)}) at lines {_lines(task.skipped)}; "
                    "use on_defect=error to stop instead")


def skipped_summary(task: Task) -> dict[str, Any]:
    """What was left out of ``task`` (the whole source, before any ``--limit``), for JSON outputs."""
    return {"count": len(task.skipped), "of": len(task.items) + len(task.skipped),
            "reasons": dict(sorted(Counter(d.reason for d in task.skipped).items())),
            "items": [{"line": d.line, "reason": d.reason, "text": d.text} for d in task.skipped]}


def _reasons(defects) -> str:
    return ", ".join(f"{r}: {k}" for r, k in sorted(Counter(d.reason for d in defects).items()))


def _lines(defects) -> str:
    lines = [str(d.line) for d in defects]
    return ", ".join(lines[:SHOWN_LINES]) + (", …" if len(lines) > SHOWN_LINES else "")
