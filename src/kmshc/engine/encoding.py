"""Pre-tokenised, length-bucketed task data: the input side of every score.

Sequences are right-padded, so absolute positions line up across a batch; that is what makes
per-position mean ablation and batched masks simple.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace
from typing import Iterator

import torch

from kmshc.tasks.base import Task
from kmshc.tasks.defects import IDENTICAL_TOKENS, defect_message, text_tokens
from kmshc.types import KmshcError

_SERIALS = itertools.count()


def start_token_id(tokenizer) -> int:
    """The token prepended to every text, so that its first word is scored too.

    ``<|endoftext|>`` where the vocabulary has it (SmolLM2: its ``<|im_start|>`` BOS costs
    11 points of accuracy on subject–verb agreement), else the BOS token, else EOS.
    """
    tid = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    if isinstance(tid, int) and tid != getattr(tokenizer, "unk_token_id", None):
        return tid
    for tid in (tokenizer.bos_token_id, tokenizer.eos_token_id):
        if tid is not None:
            return int(tid)
    raise KmshcError("the tokenizer has no <|endoftext|>, BOS or EOS token to start sequences with")


@dataclass
class Encoded:
    """A task split as token ids.

    * ``kind == "pairs"``: ``seqs[2i]`` is pair i's good sentence, ``seqs[2i+1]`` its bad one.
    * ``kind == "labels"``: ``seqs[i]`` is prompt i; ``label_ids`` ``[K]`` and ``gold`` ``[n]``.
    * ``cf_seqs`` (pairs whose items all carry a counterfactual, else ``None``): row for row the
      counterfactual of ``seqs``, each of the same length. Where a counterfactual tokenises to
      another length, ``cf_seqs`` is ``None`` and ``cf_problem`` says which item; only the
      counterfactual ablation needs them, so the task still scores under the others.
      ``name`` is the task's name.
    """

    kind: str
    seqs: list[torch.Tensor]
    n: int
    pad_id: int
    label_ids: torch.Tensor | None = None
    gold: torch.Tensor | None = None
    cf_seqs: list[torch.Tensor] | None = None
    cf_problem: str = ""
    name: str = ""
    # A process-unique serial for cache keys: ``id()`` is reused once an object is garbage
    # collected, so a cache keyed by it could hand one split's values to another.
    uid: int = field(default_factory=lambda: next(_SERIALS), init=False, compare=False, repr=False)

    @property
    def rows_per_example(self) -> int:
        return 2 if self.kind == "pairs" else 1

    def batches(self, batch_size: int) -> Iterator["Batch"]:
        """Yield batches of ``batch_size`` examples, bucketed by length to cut padding."""
        r = self.rows_per_example
        lengths = [max(len(self.seqs[r * i + j]) for j in range(r)) for i in range(self.n)]
        order = sorted(range(self.n), key=lambda i: (lengths[i], i))
        for s in range(0, self.n, batch_size):
            ex = torch.tensor(order[s:s + batch_size])
            rows = (ex[:, None] * r + torch.arange(r)).reshape(-1)
            yield Batch(ex, rows, *pad([self.seqs[i] for i in rows.tolist()], self.pad_id), data=self)


@dataclass
class Batch:
    """``examples`` ``[b]`` and ``rows`` ``[b·r]`` index the split; ``input_ids``/``attention_mask`` ``[b·r, T]``."""

    examples: torch.Tensor
    rows: torch.Tensor
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    data: "Encoded | None" = None  # the split the rows index into
    # Set on a folded batch (:func:`fold_final_tokens`): ``[b, 2]`` the good and bad final token of
    # each pair, both scored at the last real position of its one prompt row.
    candidates: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> "Batch":
        """The same batch with its token ids and attention mask on ``device`` (indices stay on the CPU)."""
        return replace(self, input_ids=self.input_ids.to(device), attention_mask=self.attention_mask.to(device))


def pad(seqs: list[torch.Tensor], pad_id: int, length: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad (or truncate) 1-D id tensors to ``length`` (default: the longest)."""
    t = length or max(len(s) for s in seqs)
    ids = torch.full((len(seqs), t), pad_id, dtype=torch.long)
    att = torch.zeros((len(seqs), t), dtype=torch.long)
    for i, s in enumerate(seqs):
        s = s[:t]
        ids[i, : len(s)] = s
        att[i, : len(s)] = 1
    return ids, att


def final_token_pairs(seqs: list[torch.Tensor]) -> bool:
    """Whether every pair ``seqs[2i]``/``seqs[2i+1]`` differs in its final token alone.

    Then, under one mask and ablation values that agree on the shared positions, both rows give
    the same hidden states up to the last shared token, and the pair's margin is
    ``log p(good final) − log p(bad final)`` read from one row (IOI, greater-than, induction).
    """
    return bool(seqs) and all(len(g) == len(b) > 1 and torch.equal(g[:-1], b[:-1])
                              for g, b in zip(seqs[0::2], seqs[1::2]))


def fold_final_tokens(batch: Batch) -> Batch:
    """One row per pair: the good sentence without its final token, ``[b, T−1]``, with
    ``candidates`` ``[b, 2]`` (good and bad final token). ``rows`` keeps the good rows (``2i``),
    so per-row caches and ablation values index the split as before. Needs
    :func:`final_token_pairs` to hold for the batch's split."""
    good = batch.rows[0::2]
    seqs = [batch.data.seqs[i] for i in good.tolist()]
    ids, att = pad([s[:-1] for s in seqs], batch.data.pad_id)
    cands = torch.stack([torch.stack([batch.data.seqs[i][-1], batch.data.seqs[i + 1][-1]]) for i in good.tolist()])
    return Batch(batch.examples, good, ids, att, data=batch.data, candidates=cands)


def encode(task: Task, tokenizer) -> Encoded:
    """Tokenise a task split; identical pairs and multi-token labels are errors naming the item.

    Defective pairs are normally dropped before the split (:mod:`kmshc.tasks.defects`); the check
    here guards callers that encode an unscreened task.
    """
    start = start_token_id(tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else start

    def ids(text: str) -> torch.Tensor:
        return torch.tensor([start] + text_tokens(tokenizer, text), dtype=torch.long)

    if not task.items:
        raise KmshcError(f"task {task.name!r}: no items to score")
    if task.kind == "pairs":
        seqs, cf_seqs, cf_problem = [], [] if task.has_counterfactuals else None, ""
        for i, it in enumerate(task.items):
            g, b = ids(it.good), ids(it.bad)
            if torch.equal(g, b):
                raise KmshcError(defect_message(it, IDENTICAL_TOKENS, task.name, i))
            seqs += [g, b]
            if cf_seqs is not None:
                cf_problem = _misaligned(it, (g, b), ids, f"{it.where or f'{task.name} item {i}'}")
                cf_seqs = None if cf_problem else cf_seqs + [ids(text) for text in it.counterfactual]
        return Encoded("pairs", seqs, len(task.items), pad_id, cf_seqs=cf_seqs, cf_problem=cf_problem, name=task.name)
    label_ids = []
    for w in task.labels:
        t = tokenizer(w, add_special_tokens=False)["input_ids"]
        if len(t) != 1:
            raise KmshcError(f"label word {w!r} is {len(t)} tokens {tokenizer.convert_ids_to_tokens(t)}; each label "
                             "must be exactly one token (try a leading space, e.g. ' True')")
        label_ids.append(t[0])
    return Encoded("labels", [ids(it.prompt) for it in task.items], len(task.items), pad_id,
                   label_ids=torch.tensor(label_ids), gold=torch.tensor([it.label for it in task.items]), name=task.name)


def _misaligned(item, clean: tuple[torch.Tensor, torch.Tensor], ids, where: str) -> str:
    """Why ``item.counterfactual`` cannot be patched from (a length differs from its clean sentence), or ``""``."""
    for text, c in zip(item.counterfactual, clean):
        if len(ids(text)) != len(c):
            return (f"{where}: the counterfactual {text!r} is {len(ids(text))} tokens but its clean sentence is "
                    f"{len(c)}; activation patching needs equal lengths (use words that are single tokens for "
                    "this tokenizer)")
    return ""
