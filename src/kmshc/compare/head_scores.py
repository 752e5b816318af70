"""Head diagnostics in ``kmshc compare --diagnostics``: do circuits hold the heads the literature expects?

Each head of the model gets scores from attention patterns alone (:mod:`kmshc.engine.diagnostics`):

* ``previous_token``, ``duplicate_token``, ``induction``: on repeated random token sequences,
  once for the model;
* ``answer``: per task, attention from the position the model reads to the earlier occurrence
  of the answer token, on the task's test split (:func:`kmshc.engine.diagnostics.answer_positions`).
  For IOI it is attention to the indirect-object name (Wang et al. 2022's name movers); for the
  induction task, to the word to copy. Tasks whose answer is not repeated by design (greater-than,
  BLiMP) have none.

Per task and method, over that task's circuits (seeds): the mean score of a circuit's heads
against the mean of all other heads, how many of the model's top-k heads by the score a circuit
contains (against ``k·|C|/N`` for a random set of its size), and a one-sided Mann–Whitney p-value
that the heads in any of the circuits score higher than the rest.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping, Sequence

import torch
from scipy.stats import mannwhitneyu

from kmshc.compare.entries import Entry
from kmshc.search.common import indices
from kmshc.types import KmshcError

MODEL_SCORES = ("previous_token", "duplicate_token", "induction")


@dataclass(frozen=True)
class DiagnosticRow:
    """One (task, method, diagnostic): circuit heads against the rest of the model."""

    task: str
    method: str
    diagnostic: str
    n_circuits: int
    mean_size: float
    inside: float | None  # mean over circuits of the mean score of the circuit's heads
    outside: float | None  # mean over circuits of the mean score of every other head
    top_k: int
    top_k_in_circuit: float  # mean over circuits: how many of the model's top-k heads it holds
    top_k_random: float  # what a random set of the same size would hold: k·|C|/N
    p_value: float | None  # Mann–Whitney, heads in any circuit > the rest (None: nothing to compare)


def summarise(scores: torch.Tensor, circuits: Sequence[frozenset[str]], *, task: str, method: str,
              diagnostic: str, top_k: int = 10) -> DiagnosticRow:
    """Compare the heads of ``circuits`` (one task and method) with the others on ``scores`` ``[L, H]``."""
    if not circuits:
        raise KmshcError(f"{task}/{method}: no circuit to summarise")
    shape, flat = tuple(scores.shape), scores.flatten().double()
    k = min(top_k, flat.numel())
    top = set(torch.topk(flat, k).indices.tolist())
    inside, outside, hits = [], [], []
    for c in circuits:
        mask = torch.zeros(flat.numel(), dtype=torch.bool)
        mask[indices(c, shape, where=f"{task}/{method} circuit")] = True
        inside.append(float(flat[mask].mean()) if mask.any() else None)
        outside.append(float(flat[~mask].mean()) if (~mask).any() else None)  # None: C holds every head
        hits.append(len(top & set(mask.nonzero().flatten().tolist())))
    union = torch.zeros(flat.numel(), dtype=torch.bool)
    union[indices(set().union(*circuits), shape)] = True
    p = (float(mannwhitneyu(flat[union].numpy(), flat[~union].numpy(), alternative="greater").pvalue)
         if union.any() and (~union).any() else None)
    sizes = [len(c) for c in circuits]
    return DiagnosticRow(task=task, method=method, diagnostic=diagnostic, n_circuits=len(circuits),
                         mean_size=_mean(sizes), inside=_mean(inside), outside=_mean(outside), top_k=k,
                         top_k_in_circuit=_mean(hits), top_k_random=k * _mean(sizes) / flat.numel(), p_value=p)


def _mean(xs: Sequence[float | None]) -> float | None:
    """Mean of the defined values (``None`` where none is: JSON has no NaN)."""
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def answer_scores(model, tokenizer, task, *, n_items: int = 128, min_share: float = 0.9) -> torch.Tensor | None:
    """``[L, H]`` attention to the answer's earlier occurrence on ``task``'s first ``n_items`` pairs, or ``None``.

    ``None`` also where fewer than ``min_share`` of the pairs have an earlier occurrence: then the
    answer repeats by chance (a digit of greater-than's start year), not by the task's design.
    """
    from kmshc.engine.diagnostics import answer_positions, attention_at, attention_patterns
    from kmshc.engine.encoding import encode, pad
    if task.kind != "pairs":
        return None
    enc = encode(task, tokenizer)
    n = min(n_items, enc.n)
    good, bad = enc.seqs[0:2 * n:2], enc.seqs[1:2 * n:2]
    query, key, valid = answer_positions(good, bad)
    if float(valid.double().mean()) < min_share:
        return None
    ids, mask = pad([g for g, v in zip(good, valid) if v], enc.pad_id)
    patterns = attention_patterns(model, ids, mask)  # [L, B, H, T, T]
    return attention_at(patterns, query[valid][:, None], key[valid][:, None])


def _shared_model_experiments(entries: Sequence[Entry]) -> tuple[dict[str, Any], Any]:
    """Each task's experiment (from its first circuit), all sharing one loaded model."""
    from kmshc.experiment import Experiment
    exps: dict[str, Any] = {}
    for e in entries:
        if e.experiment is None:
            raise KmshcError(f"{e.path}: --diagnostics needs 'config.experiment' in the circuit file")
        exps.setdefault(e.task, Experiment.from_dict(e.experiment, where=f"{e.path}: config.experiment"))
    models = {x.model for x in exps.values()}
    if len(models) != 1:
        raise KmshcError(f"--diagnostics compares the circuits of one model; these name {sorted(models)}")
    first = next(iter(exps.values()))
    loaded = first.loaded
    for x in exps.values():  # one model in memory: the cached property is filled with the first load
        vars(x)["loaded"] = loaded
    return exps, loaded


def compare_diagnostics(entries: Sequence[Entry], *, top_k: int = 10, n_seq: int = 32,
                        n_items: int = 128) -> dict[str, Any]:
    """Load the circuits' model once, score every head, and summarise each task and method's circuits.

    Returns ``{"model": name, "scores": {diagnostic or "answer:<task>": [[...]]}, "rows": [...]}``.
    """
    from kmshc.engine.diagnostics import head_diagnostics
    exps, (model, tok) = _shared_model_experiments(entries)
    diag = head_diagnostics(model, tok, n_seq=n_seq)
    model_scores = {d: getattr(diag, d) for d in MODEL_SCORES}
    answers = {t: answer_scores(model, tok, x.splits["test"], n_items=n_items) for t, x in exps.items()}
    groups: dict[tuple[str, str], list[frozenset[str]]] = {}
    for e in entries:
        groups.setdefault((e.task, e.method), []).append(e.heads)
    rows = []
    for (task, method), circuits in sorted(groups.items()):
        per_task = dict(model_scores, **({"answer": answers[task]} if answers[task] is not None else {}))
        rows += [summarise(s, circuits, task=task, method=method, diagnostic=d, top_k=top_k)
                 for d, s in per_task.items()]
    scores = {**model_scores, **{f"answer:{t}": s for t, s in answers.items() if s is not None}}
    return {"model": next(iter(exps.values())).model, "top_k": top_k,
            "scores": {d: [[round(float(x), 4) for x in row] for row in s] for d, s in scores.items()},
            "rows": [asdict(r) for r in rows]}


def markdown_section(result: Mapping[str, Any], table) -> list[str]:
    """Report lines: what the diagnostics mean, then one row per task, method and diagnostic."""
    k = result["top_k"]
    md = ["## Head diagnostics (attention patterns, no ablation)", "",
          "Per head: **previous_token**, **duplicate_token** and **induction** scores on repeated random "
          "token sequences (Olsson et al. 2022), and, per task, **answer**: attention from the position the "
          "model reads to the earlier occurrence of the answer token (IOI: the indirect-object name, as Wang "
          "et al. 2022's name movers; induction task: the word to copy). `inside`/`outside`: mean score of a "
          f"circuit's heads / of all other heads (mean over the task's circuits); `top_k_in_circuit`: how many "
          f"of the model's top {k} heads by the score a circuit holds, against `top_k_random` for a random set "
          "of its size; `p_value`: one-sided Mann–Whitney test that heads in any of the circuits score higher "
          "than the rest.", "",
          table(result["rows"], ["task", "method", "diagnostic", "n_circuits", "mean_size", "inside", "outside",
                                 "top_k_in_circuit", "top_k_random", "p_value"]), ""]
    return md

