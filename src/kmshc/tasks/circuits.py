"""Seeded generators for the field's standard circuit tasks, as minimal pairs with counterfactuals.

* ``ioi``: indirect-object identification (Wang et al. 2022, "Interpretability in the Wild"):
  "When Mary and John went to the store, John gave a drink to Mary" (good) against "… to John"
  (bad), in ABBA and BABA order. Counterfactual: the "ABC" corruption, where the second
  mention of the subject is a third name ("…, Laura gave a drink to Mary").
* ``greater_than``: Hanna et al. 2023, "How does GPT-2 compute greater-than?": "The war lasted
  from the year 1732 to the year 1783" (good, end year > start year) against "… 1718" (bad).
  Counterfactual: the start year's last two digits set to "01" ("… from the year 1701 …").
* ``induction``: "Words: " and ``k`` random words, then the same ``k`` words again; the good sequence ends
  with the right word, the bad one with a word that never occurred.
* Every sentence ends at its answer, with no closing punctuation: the pair's margin is the
  log-probability of the answer alone, the logit-difference metric of the papers above, and a
  single-token answer lets the scorer run one row per pair (:func:`kmshc.engine.encoding.fold_final_tokens`). Counterfactual: the first
  half re-drawn, so the second half has nothing to copy from.

Every word that varies between a prompt and its counterfactual is drawn from one list of words
that are single tokens (with their leading space) on SmolLM2; digits are single tokens there
too. So each counterfactual tokenises to exactly the length of its clean sentence, which
activation patching needs (positions must align); :func:`kmshc.engine.encoding.encode` checks it.

Each :class:`PairItem` carries ``counterfactual = (cf_good, cf_bad)``: the counterfactual
prompt followed by the same continuation as the good and the bad sentence.
"""
from __future__ import annotations

import random
from typing import Callable

from kmshc.tasks.base import PairItem, Task, distinct_items
from kmshc.types import KmshcError

# Single tokens (with a leading space) on SmolLM2-135M; checked by tests/test_circuit_tasks.py.
IOI_NAMES = ["Mary", "John", "Sarah", "David", "Laura", "Peter", "Emma", "James", "Anna", "Tom",
             "Michael", "Lisa", "Paul", "Kate", "Mark", "Jane", "Alex", "Sam", "Ben", "Lucy", "Rose",
             "Jack", "Max", "Amy", "Dan", "Tim", "Chris", "Ryan", "Kevin", "Eric", "Adam", "Jason",
             "Alice", "Helen", "Steve", "Rachel", "Grace", "Henry", "Daniel", "Emily", "Susan", "George",
             "Frank", "Richard", "Andrew", "Joseph", "William", "Simon", "Patrick", "Hannah"]
IOI_PLACES = ["store", "garden", "restaurant", "school", "hospital", "office", "house", "station",
              "park", "beach", "library", "market", "church", "museum"]
IOI_OBJECTS = ["ring", "kiss", "bone", "basketball", "computer", "necklace", "drink", "snack", "book",
               "letter", "gift", "ball", "cake", "flower", "key"]
# {A} and {B} are the two names of the first clause; {S} is the repeated subject, {IO} the answer.
IOI_TEMPLATES = [
    "When {A} and {B} went to the {place}, {S} gave a {obj} to {IO}",
    "Then, {A} and {B} went to the {place}. {S} gave a {obj} to {IO}",
    "After {A} and {B} went to the {place}, {S} gave a {obj} to {IO}",
    "While {A} and {B} were working at the {place}, {S} gave a {obj} to {IO}",
    "Then, {A} and {B} had a lot of fun at the {place}. {S} gave a {obj} to {IO}",
    "Friends {A} and {B} went to the {place}. {S} gave a {obj} to {IO}",
]

GT_NOUNS = ["war", "expedition", "drought", "siege", "reign", "voyage", "famine", "dispute",
            "occupation", "pilgrimage", "rebellion", "project", "journey", "trial", "construction"]
GT_TEMPLATE = "The {noun} lasted from the year {c}{xx:02d} to the year {c}{yy:02d}"

INDUCTION_PREFIX = "Words: "
INDUCTION_WORDS = [
    "apple", "river", "chair", "table", "window", "garden", "pencil", "doctor", "bottle", "cloud", "forest",
    "island", "mirror", "monkey", "pocket", "rabbit", "rocket", "silver", "summer", "ticket", "tiger", "violin",
    "winter", "yellow", "basket", "button", "candle", "carpet", "castle", "cotton", "dragon", "engine", "finger",
    "flower", "guitar", "hammer", "helmet", "jacket", "kettle", "ladder", "lemon", "magnet", "marble", "meadow",
    "needle", "orange", "pepper", "pillow", "planet", "potato", "puzzle", "rainbow", "saddle", "shadow", "shovel",
    "spider", "sponge", "stone", "sugar", "tunnel", "turtle", "wagon", "wallet", "barrel", "blanket", "bridge",
    "butter", "camera", "cookie", "copper", "desert", "eagle", "falcon", "feather", "fountain", "garlic", "ginger",
    "honey", "jungle", "kitten", "lizard", "mango", "ocean", "oyster", "parrot", "peanut", "piano", "pirate",
    "poem", "pumpkin", "quilt", "robot", "salad", "shell", "singer", "soup", "statue", "storm", "sword", "tomato",
    "tower", "trumpet", "valley", "velvet", "whale", "zebra", "bread", "horse", "house", "ship", "lamp", "sock",
    "boat", "coat", "door", "ring", "moon", "star", "bird", "fish", "tree", "book", "milk", "rice", "salt", "gold",
    "iron", "wood", "wool", "glass", "paper", "water", "music", "dance", "smile"]


def _collect(draw: Callable[[random.Random], PairItem], name: str, seed: int, n: int, source: str) -> Task:
    """``n`` distinct items from ``draw`` (redrawing duplicates, as the other generators do)."""
    if n <= 0:
        raise KmshcError(f"task {name!r}: n must be positive, got {n}")
    return Task(name=name, kind="pairs", items=distinct_items(draw, n, seed), source=f"generated:{source}:seed={seed}")


def _ioi_item(rng: random.Random) -> PairItem:
    io, s, c = rng.sample(IOI_NAMES, 3)
    tmpl = rng.choice(IOI_TEMPLATES)
    a, b = (io, s) if rng.random() < 0.5 else (s, io)  # ABBA or BABA order
    fill = dict(A=a, B=b, place=rng.choice(IOI_PLACES), obj=rng.choice(IOI_OBJECTS))
    good, bad = tmpl.format(S=s, IO=io, **fill), tmpl.format(S=s, IO=s, **fill)
    # ABC corruption: the repeated subject becomes a third name; the continuation is unchanged.
    cf = (tmpl.format(S=c, IO=io, **fill), tmpl.format(S=c, IO=s, **fill))
    return PairItem(good, bad, counterfactual=cf)


def ioi_task(seed: int = 0, n: int = 1000) -> Task:
    """IOI minimal pairs (good: the indirect object; bad: the subject) with ABC counterfactuals."""
    return _collect(_ioi_item, "ioi", seed, n, "ioi")


def _greater_than_item(rng: random.Random) -> PairItem:
    noun, c = rng.choice(GT_NOUNS), rng.choice([12, 13, 14, 15, 16, 17, 18])
    xx = rng.randint(2, 97)  # 01 is the counterfactual start; both a later and an earlier end must exist
    yes, no = rng.randint(xx + 1, 99), rng.randint(0, xx - 1)
    fill = dict(noun=noun, c=c)
    good, bad = GT_TEMPLATE.format(xx=xx, yy=yes, **fill), GT_TEMPLATE.format(xx=xx, yy=no, **fill)
    cf = (GT_TEMPLATE.format(xx=1, yy=yes, **fill), GT_TEMPLATE.format(xx=1, yy=no, **fill))
    return PairItem(good, bad, counterfactual=cf)


def greater_than_task(seed: int = 0, n: int = 1000) -> Task:
    """Greater-than pairs: an end year after the start year (good) or before it (bad); "01" counterfactuals."""
    return _collect(_greater_than_item, "greater_than", seed, n, "greater_than")


def induction_task(seed: int = 0, n: int = 1000, length: int = 6) -> Task:
    """Repeated random words: ``Words: w1 … wk w1 … wk`` (good) vs the last word replaced by an unseen one (bad).

    The counterfactual re-draws the first half from words in neither sentence.
    """
    if not 2 <= length <= len(INDUCTION_WORDS) // 3:
        raise KmshcError(f"induction length must be in [2, {len(INDUCTION_WORDS) // 3}], got {length}")

    def draw(rng: random.Random) -> PairItem:
        words = rng.sample(INDUCTION_WORDS, 2 * length + 1)
        seq, other, wrong = words[:length], words[length:2 * length], words[-1]
        # The prefix makes it a list (SmolLM2: full accuracy 1.00 with it, 0.78 with a bare leading
        # space) and gives the first word its leading space, so it is one token like its repetition.
        text = lambda ws: INDUCTION_PREFIX + " ".join(ws)  # noqa: E731
        good, bad = text(seq + seq), text(seq + seq[:-1] + [wrong])
        cf = (text(other + seq), text(other + seq[:-1] + [wrong]))
        return PairItem(good, bad, counterfactual=cf)

    return _collect(draw, "induction", seed, n, f"induction:{length}")
