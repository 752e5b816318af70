"""Seeded task generators for the paper's three families; they need no files.

* grammar: determiner–noun and subject–verb agreement minimal pairs from templates;
* arithmetic: ``a + b = c`` (and ``-``) against a wrong ``c'`` in [0.5c, 1.5c], c' != c;
* word problems: short stories whose final number is perturbed the same way.
"""
from __future__ import annotations

import itertools
import random
from typing import Sequence

from kmshc.tasks.base import PairItem, Task, distinct_items
from kmshc.types import KmshcError

NOUNS = [("dog", "dogs"), ("cat", "cats"), ("book", "books"), ("car", "cars"), ("house", "houses"),
         ("teacher", "teachers"), ("student", "students"), ("bird", "birds"), ("tree", "trees"),
         ("girl", "girls"), ("boy", "boys"), ("river", "rivers"), ("chair", "chairs"),
         ("doctor", "doctors"), ("window", "windows"), ("song", "songs"), ("horse", "horses"),
         ("apple", "apples"), ("garden", "gardens"), ("friend", "friends"), ("picture", "pictures"),
         ("child", "children"), ("man", "men"), ("woman", "women"), ("mouse", "mice")]
NAMES = ["Mary", "John", "Sarah", "David", "Laura", "Peter", "Emma", "James", "Anna", "Tom"]
TRANS_VERBS = ["saw", "liked", "found", "painted", "visited", "cleaned", "noticed", "remembered"]
# (3rd singular, plural) present-tense verbs for subject–verb agreement
AGREE_VERBS = [("runs", "run"), ("sleeps", "sleep"), ("waits", "wait"), ("sings", "sing"),
               ("works", "work"), ("laughs", "laugh"), ("falls", "fall"), ("smiles", "smile")]
PREPS = ["near", "behind", "beside", "under", "with"]


def _det_noun(rng: random.Random) -> PairItem:
    sg, pl = rng.choice(NOUNS)
    plural = rng.random() < 0.5
    det = rng.choice(["these", "those"] if plural else ["this", "that"])
    name, verb = rng.choice(NAMES), rng.choice(TRANS_VERBS)
    good, bad = (pl, sg) if plural else (sg, pl)
    return PairItem(f"{name} {verb} {det} {good}.", f"{name} {verb} {det} {bad}.")


def _subj_verb(rng: random.Random) -> PairItem:
    sg, pl = rng.choice(NOUNS)
    v_sg, v_pl = rng.choice(AGREE_VERBS)
    plural = rng.random() < 0.5
    subj = pl if plural else sg
    good, bad = (v_pl, v_sg) if plural else (v_sg, v_pl)
    if rng.random() < 0.5:  # an attractor phrase between subject and verb
        o_sg, o_pl = rng.choice(NOUNS)
        subj = f"{subj} {rng.choice(PREPS)} the {o_pl if not plural else o_sg}"
    return PairItem(f"The {subj} {good}.", f"The {subj} {bad}.")


GRAMMAR_PHENOMENA = {"determiner_noun": _det_noun, "subject_verb": _subj_verb}


def grammar_task(seed: int = 0, n: int = 1000,
                 phenomena: Sequence[str] = ("determiner_noun", "subject_verb")) -> Task:
    """Agreement minimal pairs, drawn in equal shares from ``phenomena``; duplicates are dropped."""
    for p in phenomena:
        if p not in GRAMMAR_PHENOMENA:
            raise KmshcError(f"unknown grammar phenomenon {p!r}; expected one of {sorted(GRAMMAR_PHENOMENA)}")
    turn = itertools.count()  # the phenomena take turns, one draw each

    def draw(rng: random.Random) -> PairItem:
        return GRAMMAR_PHENOMENA[phenomena[next(turn) % len(phenomena)]](rng)
    return Task(name="grammar", kind="pairs", items=distinct_items(draw, n, seed), source=f"generated:grammar:seed={seed}")


def _ordered(a: int, b: int, op: str) -> tuple[int, int, int]:
    """The operands and the answer of ``a op b``; for ``-`` the larger operand comes first, so the
    answer is never negative."""
    if op == "-" and b > a:
        a, b = b, a
    return a, b, a + b if op == "+" else a - b


def perturb(c: int, rng: random.Random) -> int:
    """A wrong answer in [0.5c, 1.5c] that differs from ``c`` (as in the paper).

    Only exists for ``c >= 2`` (for c = 0 or 1 the interval holds no other integer), so the
    generators redraw operands until the true answer is at least 2.
    """
    if c < 2:
        raise ValueError(f"no integer in [0.5c, 1.5c] differs from c={c}; need c >= 2")
    lo, hi = (c + 1) // 2, (3 * c) // 2
    return rng.choice([x for x in range(lo, hi + 1) if x != c])


# Named operand ranges. "paper" is the K-MSHC paper's 1..1000; "small" (default) is where
# SmolLM2-135M is clearly above chance (docs/tasks.md).
ARITHMETIC_PRESETS = {"small": (1, 20), "paper": (1, 1000)}


def arithmetic_task(seed: int = 0, n: int = 1000, preset: str = "small",
                    low: int | None = None, high: int | None = None, ops: str = "+") -> Task:
    """Verification pairs ``"a + b = c"`` (good) vs ``"a + b = c'"`` (bad)."""
    if preset not in ARITHMETIC_PRESETS:
        raise KmshcError(f"unknown arithmetic preset {preset!r}; expected one of {sorted(ARITHMETIC_PRESETS)}")
    lo, hi = ARITHMETIC_PRESETS[preset]
    lo, hi = low if low is not None else lo, high if high is not None else hi
    if not 0 <= lo <= hi:
        raise KmshcError(f"arithmetic operand range must satisfy 0 <= low <= high, got {lo}..{hi}")
    if not ops or set(ops) - {"+", "-"}:
        raise KmshcError(f"arithmetic ops must be made of '+' and '-', got {ops!r}")
    def draw(rng: random.Random) -> PairItem | None:
        a, b, op = rng.randint(lo, hi), rng.randint(lo, hi), rng.choice(ops)
        a, b, c = _ordered(a, b, op)
        if c < 2:  # no valid perturbation (see perturb)
            return None
        return PairItem(f"{a} {op} {b} = {c}", f"{a} {op} {b} = {perturb(c, rng)}")
    return Task(name=f"arithmetic_{lo}-{hi}", kind="pairs", items=distinct_items(draw, n, seed),
                source=f"generated:arithmetic:{lo}-{hi}:{ops}:seed={seed}")


OBJECTS = ["apples", "books", "marbles", "pencils", "cookies", "stickers", "coins", "flowers"]
STORIES = [
    ("{name} has {a} {obj}. {pro} gets {b} more. Now {name} has {c} {obj}.", "+"),
    ("{name} had {a} {obj} and bought {b} more, so {name} has {c} {obj}.", "+"),
    ("{name} has {a} {obj}. {pro} gives away {b}. Now {name} has {c} {obj}.", "-"),
]


def word_problem_task(seed: int = 0, n: int = 1000, high: int = 20, ops: str = "+-") -> Task:
    """Template stories; the good sentence ends with the right total, the bad one with a perturbed total."""
    if high < 2:
        raise KmshcError(f"word problem numbers need high >= 2, got {high}")
    stories = [s for s in STORIES if s[1] in ops]
    if not stories:
        raise KmshcError(f"word problem ops must include '+' or '-', got {ops!r}")
    def draw(rng: random.Random) -> PairItem | None:
        tmpl, op = rng.choice(stories)
        a, b = rng.randint(1, high), rng.randint(1, high)
        a, b, c = _ordered(a, b, op)
        if c < 2:  # no valid perturbation (see perturb)
            return None
        name = rng.choice(NAMES)
        pro = "She" if name in {"Mary", "Sarah", "Laura", "Emma", "Anna"} else "He"
        fill = dict(name=name, pro=pro, obj=rng.choice(OBJECTS), a=a, b=b)
        return PairItem(tmpl.format(c=c, **fill), tmpl.format(c=perturb(c, rng), **fill))
    return Task(name="word_problems", kind="pairs", items=distinct_items(draw, n, seed),
                source=f"generated:word_problems:seed={seed}")
