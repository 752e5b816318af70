"""Where a certificate's rounds get their items and how they survive a crash.

:class:`Certifier` gives :func:`~kmshc.search.verify.certify` the ``more(k, count)`` source of an
:class:`~kmshc.experiment.Experiment`: each round scores items that no split and no earlier
round used (:mod:`kmshc.tasks.fresh`). :class:`ScoredRounds` keeps every mask a
certificate scored, per round and per item set, in ``certify_rounds.npz`` beside the circuit, so
a resumed certificate re-reads what it had already scored instead of running it again.
"""
from __future__ import annotations

import hashlib
import io
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from kmshc.search.verify import certify
from kmshc.types import KmshcError, atomic_write_bytes

ROUNDS = "certify_rounds.npz"


@dataclass(frozen=True)
class Scored:
    """What :func:`kmshc.search.decide.metric_values` reads: per-example ``[M, n]`` tensors."""

    correct: torch.Tensor
    margin: torch.Tensor


def items_digest(items) -> str:
    """A short fingerprint of an item list (its prompts in order)."""
    h = hashlib.sha1()
    for it in items:
        h.update(repr((getattr(it, "good", None), getattr(it, "bad", None), getattr(it, "prompt", None))).encode())
    return h.hexdigest()[:12]


class ScoredRounds:
    """Per-example outcomes already scored, keyed by round, item fingerprint and mask.

    Args:
        path: the ``.npz`` store; ``None`` keeps nothing.
        resume: read ``path`` if it exists; else start empty (and overwrite it on the first save).
        save: write after each scoring call (False on ranks other than 0).
    """

    def __init__(self, path: str | Path | None, *, resume: bool, save: bool = True) -> None:
        self.path, self.save = (Path(path) if path else None), save
        self.store: dict[str, np.ndarray] = {}
        if resume and self.path is not None and self.path.exists():
            try:
                with np.load(self.path) as d:
                    self.store = {k: d[k] for k in d.files}
            except (OSError, ValueError, zipfile.BadZipFile) as e:
                raise KmshcError(f"{self.path}: cannot read the certificate's scored rounds ({type(e).__name__}); "
                                 "delete it or use --overwrite to score them again") from None

    def wrap(self, outcomes: Callable[[torch.Tensor], Any], tag: str) -> Callable[[torch.Tensor], Scored]:
        """``outcomes`` that scores only the masks this store lacks for ``tag`` (round and items)."""
        def fn(masks: torch.Tensor) -> Scored:
            keys = [f"{tag}:{hashlib.sha1(m.bool().cpu().numpy().tobytes()).hexdigest()[:16]}" for m in masks]
            todo = [i for i, k in enumerate(keys) if k + ":margin" not in self.store]
            if todo:
                out = outcomes(masks[todo])
                for j, i in enumerate(todo):
                    self.store[keys[i] + ":margin"] = out.margin[j].double().cpu().numpy()
                    self.store[keys[i] + ":correct"] = out.correct[j].double().cpu().numpy()
                self._write()
            return Scored(*(torch.from_numpy(np.stack([self.store[f"{k}:{part}"] for k in keys]))
                            for part in ("correct", "margin")))
        return fn

    def _write(self) -> None:
        if self.path is not None and self.save:
            buf = io.BytesIO()
            np.savez(buf, **self.store)
            atomic_write_bytes(self.path, buf.getvalue())


@dataclass
class Certifier:
    """Certificates of one run: the test split first, then fresh items as rounds ask, never the same
    item twice (a repaired circuit's certificate starts on items no earlier one saw).

    ``certify(heads, **kw)`` takes :func:`~kmshc.search.verify.certify`'s keywords; ``scorers``
    collects every scorer used, for the cost count; ``spent``: the last certificate's rounds, as
    outcome functions (read back from the store), for a repair's search."""

    cfg: Any  # SearchConfig
    exp: Any  # Experiment
    store: ScoredRounds
    scorers: list
    spent: list = field(default_factory=list)
    _source: Any = None
    _attempt: int = 0

    def certify(self, heads, **kw):
        cfg, exp = self.cfg, self.exp
        split = cfg.verify_split
        if self._source is None:
            self._source = exp.fresh_items()
        # the first certificate reads the test split; a repaired circuit's, items no earlier one saw
        items = exp.splits[split].items if self._attempt == 0 else self._source.take(len(exp.splits[split]))
        if not items:
            raise KmshcError(f"{split}: no fresh items left to certify a repaired circuit on")
        scorer = exp.scorer_for(split, items=None if self._attempt == 0 else items, distributed=True)
        self.scorers.append(scorer)
        more, cap = None, None
        if cfg.certify_until_decided and kw.get("semantics", "keep") == "keep":
            more, cap = self._more(scorer.n)
        self.spent = [self.store.wrap(scorer.outcomes, f"a{self._attempt}r0:{items_digest(items)}")]
        cert = certify(self.spent[0], exp.shape,
                       heads, config=cfg.certificate, metric=cfg.metric, skipped=exp.data_skipped, split=split,
                       more=more, max_items=cap, **kw)
        self._attempt += 1
        note = file_note(cert, exp.data, self._source.remaining)
        return replace(cert, reasons=[*cert.reasons, note]) if note else cert

    def can_certify_again(self) -> bool:
        """Whether a repaired circuit could get its own certificate: a generator never runs dry,
        a data file only while it has unused items."""
        left = None if self._source is None else self._source.remaining
        return left is None or left > 0

    def _more(self, n0: int):
        source, exp, attempt = self._source, self.exp, self._attempt
        remaining = source.remaining
        cap = self.cfg.max_test_items if remaining is None else min(self.cfg.max_test_items, n0 + remaining)
        origin = "generated" if remaining is None else f"unused items of {exp.data}"

        def more(k: int, count: int):
            items = source.take(count)
            if not items:
                return None
            sc = exp.scorer_for(self.cfg.verify_split, items=items, distributed=True)
            self.scorers.append(sc)
            self.spent.append(self.store.wrap(sc.outcomes, f"a{attempt}r{k}:{items_digest(items)}"))
            return self.spent[-1], f"{len(items)} fresh items ({origin})"
        return more, cap


def file_note(cert, data: str | None, left: int | None) -> str | None:
    """For an undecided certificate on a data file (``left``: its unused items; None for a
    generator): the items it would likely need and how many the file still has. For a refuted
    one on a file with no unused items left: that no smaller circuit can be certified on it."""
    if cert.verdict == "refuted" and left == 0:
        return f"refuted after {cert.n} items; {data} has no unused items left to certify a repaired circuit on"
    if cert.verdict != "undecided" or left is None:
        return None
    need = (f"about {cert.n_needed} test items would likely decide it" if cert.n_needed else
            "no number of items would pass an open check whose effect points the wrong way")
    return f"undecided after {cert.n} items: {need}; {data} has {left} unused items left"
