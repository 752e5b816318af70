"""Silencing, at the place they arise, messages that a user cannot act on.

Each is matched by its message and origin, for the duration of one run, so that every other
warning still shows.
"""
from __future__ import annotations

import logging
import warnings
from contextlib import contextmanager
from typing import Iterator


class _DropLitLoggerTip(logging.Filter):
    """The trainer advertises LitLogger whenever another logger is used; the user cannot act on it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in record.getMessage()


@contextmanager
def quiet_lightning(info: bool = True) -> Iterator[None]:
    """Silence, for one run, the two Lightning messages that come from Lightning itself, not from
    anything the user set: the LitLogger tip, and the FutureWarning that Lightning ≤ 2.6's
    ``CombinedLoader`` raises by building torch's deprecated ``LeafSpec`` for every dataloader.
    Both are matched by message and origin, so every other warning still shows.

    ``info=False`` also hides Lightning's informational lines (devices found, why fit stopped),
    for library calls that report their own results.
    """
    tip = _DropLitLoggerTip()
    log = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    level = log.level
    log.addFilter(tip)
    if not info:
        log.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                                    category=FutureWarning, module=r"lightning\.pytorch\.utilities\._pytree")
            yield
    finally:
        log.removeFilter(tip)
        log.setLevel(level)


@contextmanager
def no_loading_bars() -> Iterator[None]:
    """transformers ≥ 5 draws a "Loading weights" bar (and "Writing model shards" when the GGUF
    cache is written) on every load; a load takes seconds, so the bar is noise. Restored after."""
    from transformers.utils import logging as hf_logging
    was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            hf_logging.enable_progress_bar()
