"""Readers for task files. Every problem is reported with its file and line.

A data path may start with ``$KMSHC_DATA`` (or ``${KMSHC_DATA}``): the folder named by the
``KMSHC_DATA`` environment variable, which holds ``blimp/<paradigm>.jsonl``. The shipped BLiMP
configs name their file that way, so they run on any machine that sets the variable.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterator

from kmshc.tasks.base import LabelItem, PairItem, Task
from kmshc.tasks.defects import drop_defective_pairs
from kmshc.types import KmshcError


DATA_ENV = "KMSHC_DATA"


def resolve_data_path(path: str | Path) -> Path:
    """``path`` with a leading ``$KMSHC_DATA`` replaced by the variable's folder; a clear error
    when the path names the variable and it is unset."""
    text = str(path)
    for prefix in (f"${DATA_ENV}", f"${{{DATA_ENV}}}"):
        if text == prefix or text.startswith(prefix + "/"):
            root = os.environ.get(DATA_ENV)
            if not root:
                raise KmshcError(f"{text}: the data path starts with ${DATA_ENV}, but {DATA_ENV} is not set; set it "
                                 "to the folder that holds blimp/<paradigm>.jsonl (README, Data), or give the "
                                 "file's own path")
            return Path(root) / text[len(prefix):].lstrip("/")
    return Path(path)


def _records(path: str | Path) -> Iterator[tuple[int, dict]]:
    path = resolve_data_path(path)
    if not path.exists():
        raise KmshcError(f"{path}: data file not found")
    if path.is_dir():
        raise KmshcError(f"{path}: expected a jsonl file, got a directory")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise KmshcError(f"{path}: cannot read data file ({e.strerror})") from None
    try:
        text = raw.decode("utf-8-sig")  # a leading BOM (some Windows editors) is harmless
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise KmshcError(f"{path}:{line}: not valid UTF-8 ({e.reason})") from None
    seen = False
    # Split on "\n" only: str.splitlines() would also cut at U+2028 etc., which JSON allows inside strings.
    for no, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise KmshcError(f"{path}:{no}: malformed JSON ({e.msg} at column {e.colno}); "
                             "expected one JSON object per line") from None
        except (ValueError, RecursionError) as e:  # e.g. a 5000-digit number, or [[[[... nested too deep
            raise KmshcError(f"{path}:{no}: unreadable JSON ({type(e).__name__}: {str(e)[:80]}); "
                             "expected one JSON object per line") from None
        if not isinstance(rec, dict):
            raise KmshcError(f"{path}:{no}: expected a JSON object, got {type(rec).__name__}")
        seen = True
        yield no, rec
    if not seen:
        raise KmshcError(f"{path}: data file is empty; expected one JSON object per line")


def _field(rec: dict, key: str, path: str | Path, no: int) -> str:
    if key not in rec:
        raise KmshcError(f"{path}:{no}: missing field '{key}' (fields present: {', '.join(sorted(rec)) or 'none'})")
    val = rec[key]
    if not isinstance(val, str) or not val.strip():
        raise KmshcError(f"{path}:{no}: field '{key}' must be a non-empty string, got {val!r}")
    return val


def load_blimp_jsonl(path: str | Path, name: str | None = None, on_defect: str = "skip") -> Task:
    """Minimal pairs from a BLiMP-format jsonl file (fields ``sentence_good``, ``sentence_bad``).

    Pairs whose two sentences are identical are defective: left out and listed in ``skipped``
    (``on_defect="skip"``), or an error naming the line (``"error"``). A broken file is always an error.
    """
    items = []
    for no, rec in _records(path):
        good, bad = _field(rec, "sentence_good", path, no), _field(rec, "sentence_bad", path, no)
        items.append(PairItem(good, bad, where=f"{path}:{no}", line=no))
    task = Task(name=name or Path(path).stem, kind="pairs", items=tuple(items), source=str(path))
    return drop_defective_pairs(task, on_defect=on_defect)


def load_label_jsonl(path: str | Path, labels: list[str], name: str | None = None) -> Task:
    """Label-token prompts from jsonl: ``{"prompt": ..., "label": <one of labels>}``.

    Label words usually carry their leading space (``" True"``); each must be a single token,
    which is checked when the task is encoded for a tokenizer.
    """
    if len(labels) < 2:
        raise KmshcError(f"a label task needs at least two label words, got {labels!r}")
    if len(set(labels)) != len(labels):
        raise KmshcError(f"label words must be distinct, got {labels!r}")
    items = []
    for no, rec in _records(path):
        prompt, label = _field(rec, "prompt", path, no), _field(rec, "label", path, no)
        if label not in labels:
            raise KmshcError(f"{path}:{no}: field 'label' is {label!r}; expected one of {labels!r}")
        items.append(LabelItem(prompt, labels.index(label), where=f"{path}:{no}", line=no))
    return Task(name=name or Path(path).stem, kind="labels", items=tuple(items),
                labels=tuple(labels), source=str(path))
