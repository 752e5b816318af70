"""Counting, recording and resuming evaluations of ``S(·)``.

A search is a deterministic function of its seed and of the scores it sees. The
:class:`Recorder` therefore logs every evaluated mask and its score, plus every decision with
the RNG state after it, and saves that log atomically after each batch and each decision.
``resume`` replays the log: the search re-runs from the start, takes scores from the log
instead of the model (no new evaluations), checks that it asks for the same masks and takes
the same decisions, and continues live when the log ends. So a resumed run reaches exactly the
result of an uninterrupted one with the same seed.
"""
from __future__ import annotations

import hashlib
import json
import random
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from kmshc.types import KmshcError, atomic_write_json

EvaluateMany = Callable[[torch.Tensor], Sequence[float]]


def batched(evaluate: Callable[[torch.Tensor], float]) -> EvaluateMany:
    """Turn a one-mask ``evaluate(mask [L, H]) -> float`` into ``evaluate_many`` (one call per mask)."""
    return lambda masks: [float(evaluate(m)) for m in masks]


def mask_key(mask: torch.Tensor) -> str:
    """A compact, exact key of a 0/1 mask ``[L, H]``: the hex of its bits in row-major order."""
    bits = "".join("1" if v > 0.5 else "0" for v in mask.reshape(-1).tolist())
    return f"{len(bits)}:{int(bits, 2):x}" if bits else "0:0"


def rng_digest(rng: random.Random) -> str:
    return hashlib.sha1(repr(rng.getstate()).encode()).hexdigest()[:16]


def rng_to_json(rng: random.Random) -> list:
    v, state, gauss = rng.getstate()
    return [v, list(state), gauss]


def rng_from_json(d: list) -> random.Random:
    rng = random.Random()
    rng.setstate((d[0], tuple(d[1]), d[2]))
    return rng


def read_state(path: Path) -> dict[str, Any]:
    """The search state file at ``path`` (what :meth:`Recorder.save` writes: ``fingerprint``,
    ``log``, ``trace``, counts); an unreadable or malformed file is a :class:`KmshcError`."""
    try:
        d = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as e:  # ValueError: bad JSON/UTF-8, 5000-digit numbers
        raise KmshcError(f"{path}: cannot read search state ({type(e).__name__}: {str(e)[:80]})") from None
    if not (isinstance(d, dict) and isinstance(d.get("log"), list) and isinstance(d.get("trace"), list)
            and all(isinstance(e, list) and len(e) == 2 for e in d["log"])):
        raise KmshcError(f"{path}: not a search state file (expected an object with 'fingerprint', 'log' "
                         "and 'trace'); use --overwrite to start again")
    return d


class BudgetExhausted(Exception):
    """Raised inside a search when ``max_evaluations`` is reached; the search stops there.

    The stage that was running attaches its current set with :meth:`at` (flat indices, and its
    score if known), so a capped search reports the set it had reached, not the set its stage
    started from.
    """
    C: set[int] | None = None
    score: float | None = None

    def at(self, C: set[int], score: float | None) -> "BudgetExhausted":
        if self.C is None:  # the innermost stage knows the most recent set
            self.C, self.score = set(C), score
        return self


class Recorder:
    """Counts evaluations (one new mask = one evaluation), logs them, and saves resumable state.

    Args:
        evaluate_many: ``masks [M, L, H] -> M scores`` (one batched forward when possible).
        path: where ``search_state.json`` lives; ``None`` keeps everything in memory.
        resume: replay the log found at ``path`` before evaluating anything new.
        fingerprint: what must match on resume (config, seed, split sizes); a mismatch is an error.
        max_evaluations: cap; asking for more raises :class:`BudgetExhausted`.
        others: further named scorers, e.g. ``{"macro": f}`` for a stage that scores differently;
            ``many(masks, using="macro")`` calls them, and their evaluations count too.
        on_progress: called as ``on_progress(evaluations, size)`` after each batch/decision.
        save_state: write ``path`` (False on the ranks other than 0 of a distributed search,
            which read it to resume but leave the writing to rank 0).
        forwards: returns the example forwards (:mod:`kmshc.engine.cost`) that the scorers behind
            ``evaluate_many`` and ``others`` have run so far in this process; the log keeps the
            running total, so a resumed search adds to what the interrupted one spent.
    """

    def __init__(self, evaluate_many: EvaluateMany, path: str | Path | None = None, resume: bool = False,
                 fingerprint: dict[str, Any] | None = None, max_evaluations: int | None = None,
                 on_progress: Callable[[int, int | None], None] | None = None,
                 others: dict[str, EvaluateMany] | None = None, save_state: bool = True,
                 forwards: Callable[[], float] | None = None,
                 older: Callable[[dict], dict] | None = None) -> None:
        self._scorers = {"": evaluate_many, **(others or {})}
        self._older = older or (lambda d: d)  # a saved fingerprint, in today's terms
        self.path = Path(path) if path else None
        self.save_state = save_state
        self.fingerprint = json.loads(json.dumps(fingerprint or {}, default=str))
        self.max_evaluations, self.on_progress = max_evaluations, on_progress
        self.log: list[list] = []        # [mask_key, score] in evaluation order
        self._seen: dict[str, float] = {}  # mask_key -> score, for repeats
        self.repeats = 0                 # masks answered from the log instead of evaluated
        self.trace: list[dict] = []      # decisions, each with the RNG digest after it
        self.rng_state: list | None = None
        self._replay_log: list[list] = []
        self._replay_trace: list[dict] = []
        self._wall_before = 0.0
        self._forwards, self._forwards_before = forwards, 0.0
        self._start = time.perf_counter()
        self.size: int | None = None
        if resume:
            self._load()

    # -- resume
    def _load(self) -> None:
        if self.path is None or not self.path.exists():
            raise KmshcError(f"--resume: no search state at {self.path}; start without --resume")
        d = read_state(self.path)
        saved = self._older(d.get("fingerprint", {}))
        if saved != self.fingerprint:
            diff = sorted(k for k in set(saved) | set(self.fingerprint) if saved.get(k) != self.fingerprint.get(k))
            raise KmshcError(f"{self.path}: --resume with a different configuration (fields differ: "
                             f"{', '.join(diff)}); rerun with the same config, or use --overwrite")
        self._replay_log, self._replay_trace = list(d["log"]), list(d["trace"])
        self._wall_before = float(d.get("wall_time_s", 0.0))
        spent = d.get("example_forwards", 0.0)  # absent in logs written before it was counted
        if not isinstance(spent, (int, float)) or isinstance(spent, bool):
            raise KmshcError(f"{self.path}: field 'example_forwards' must be a number, got {spent!r}")
        self._forwards_before = float(spent)

    @property
    def replaying(self) -> bool:
        return len(self.log) < len(self._replay_log)

    # -- evaluation
    @property
    def evaluations(self) -> int:
        return len(self.log)

    @property
    def wall_time_s(self) -> float:
        return self._wall_before + time.perf_counter() - self._start

    @property
    def example_forwards(self) -> float:
        """Example forwards spent by this search, including those of the run it resumed."""
        return self._forwards_before + (float(self._forwards()) if self._forwards is not None else 0.0)

    def many(self, masks: Sequence[torch.Tensor] | torch.Tensor, using: str = "") -> list[float]:
        """Scores of ``masks`` (each ``[L, H]``): a mask seen before is answered from the log (no
        forward pass, not counted), then the replay log where it reaches, else live.

        Repeats are common and free: the single-head pass re-asks ``S(C \\ {h})`` for every head
        whose last test was already on the current ``C``. Scores are deterministic, so the answer is
        the same, and a resumed run rebuilds the same cache from its log.
        """
        masks = torch.stack(list(masks)) if not isinstance(masks, torch.Tensor) else masks
        keys = [using + mask_key(m) for m in masks]
        out: list[float | None] = [None] * len(keys)
        todo: dict[str, list[int]] = {}  # new keys -> positions in this batch (duplicates once)
        for i, key in enumerate(keys):
            if key in self._seen:
                out[i] = self._seen[key]
                self.repeats += 1
            elif key in todo:
                todo[key].append(i)
                self.repeats += 1
            elif self.replaying:  # keys reach `todo` only once the replay log is used up
                j = len(self.log)
                if self._replay_log[j][0] != key:
                    raise KmshcError(f"{self.path}: --resume diverged at evaluation {j + 1}: the saved run evaluated "
                                     "a different mask (was the code, data or seed changed?); use --overwrite")
                out[i] = self._append(key, float(self._replay_log[j][1]))
            else:
                todo[key] = [i]
        if todo:
            if self.max_evaluations is not None and len(self.log) + len(todo) > self.max_evaluations:
                raise BudgetExhausted(f"evaluation cap {self.max_evaluations} reached")
            first = [pos[0] for pos in todo.values()]
            scores = [float(s) for s in self._scorers[using](masks[first])]
            if len(scores) != len(first):
                raise ValueError(f"evaluate_many returned {len(scores)} scores for {len(first)} masks")
            for (key, pos), s in zip(todo.items(), scores):
                self._append(key, s)
                for i in pos:
                    out[i] = s
            self.save()
        self._progress()
        return [float(v) for v in out]  # type: ignore[arg-type]

    def _append(self, key: str, score: float) -> float:
        self.log.append([key, score])
        self._seen[key] = score
        return score

    def one(self, mask: torch.Tensor) -> float:
        return self.many(mask[None])[0]

    # -- decisions
    def decision(self, rng: random.Random, size: int | None = None, **event: Any) -> None:
        """Record one decision of the search (JSON-able ``event``) with the RNG state after it and
        ``example_forwards``, what the search had spent when it was taken (cumulative, so the
        differences show where the cost went: restoring, deleting, confirming)."""
        event = json.loads(json.dumps(event, default=str))
        event["rng"] = rng_digest(rng)
        i = len(self.trace)
        if i < len(self._replay_trace):
            saved = dict(self._replay_trace[i]) if isinstance(self._replay_trace[i], dict) else None
            spent = saved.pop("example_forwards", None) if saved else None  # the interrupted run's: kept, not compared
            if saved != event:
                raise KmshcError(f"{self.path}: --resume diverged at decision {i + 1} ({event.get('event')}); "
                                 "use --overwrite")
            if spent is not None:
                event["example_forwards"] = spent
        else:
            event["example_forwards"] = round(self.example_forwards, 3)
        self.trace.append(event)
        self.rng_state = rng_to_json(rng)
        self.size = size if size is not None else self.size
        if not self.replaying:
            self.save()
        self._progress()

    def save(self, done: bool = False) -> None:
        if self.path is None or self.replaying or not self.save_state:
            return
        atomic_write_json(self.path, {"fingerprint": self.fingerprint, "evaluations": self.evaluations,
                                      "example_forwards": round(self.example_forwards, 3),
                                      "wall_time_s": round(self.wall_time_s, 3), "done": done,
                                      "rng": self.rng_state, "trace": self.trace, "log": self.log})

    def _progress(self) -> None:
        if self.on_progress is not None:
            self.on_progress(self.evaluations, self.size)
