"""The circuit-task generators (IOI, greater-than, induction) and their counterfactuals."""
from __future__ import annotations

import re

import pytest

from kmshc.tasks import GENERATED_TASKS, greater_than_task, induction_task, ioi_task, make_task, split_task
from kmshc.tasks.circuits import INDUCTION_PREFIX, INDUCTION_WORDS, IOI_NAMES
from kmshc.types import KmshcError

CIRCUIT_TASKS = {"ioi": ioi_task, "greater_than": greater_than_task, "induction": induction_task}


@pytest.mark.parametrize("name", sorted(CIRCUIT_TASKS))
def test_seeded_distinct_and_large_enough_for_splits(name):
    a, b, c = (make_task(name, seed=s) for s in (1, 1, 2))
    assert a.items == b.items and a.items != c.items
    assert len(a) == 1000 and len(set(a.items)) == 1000 and a.has_counterfactuals
    assert {k: len(v) for k, v in split_task(a).items()} == {"train": 600, "val": 200, "test": 200}
    assert GENERATED_TASKS[name] is CIRCUIT_TASKS[name]
    for it in a.items[:100]:
        # Good and bad differ in their last word only; so do the two counterfactual sentences.
        for x, y in ((it.good, it.bad), it.counterfactual):
            wx, wy = x.split(), y.split()
            assert wx[:-1] == wy[:-1] and wx[-1] != wy[-1], it
        # Each counterfactual keeps its clean sentence's word count and continuation.
        for clean, cf in zip((it.good, it.bad), it.counterfactual):
            assert len(clean.split()) == len(cf.split()) and clean.split()[-1] == cf.split()[-1]


def _names(text: str) -> list[str]:
    return [w.strip(",.") for w in text.split() if w.strip(",.") in IOI_NAMES]


def test_ioi_answer_is_the_indirect_object_and_the_counterfactual_is_abc():
    orders = set()
    for it in ioi_task(seed=0, n=300).items:
        a, b, s, io = _names(it.good)
        assert {a, b} == {s, io} and s != io and _names(it.bad)[-1] == s
        orders.add("ABBA" if a == io else "BABA")
        ca, cb, c, cio = _names(it.counterfactual[0])
        assert (ca, cb, cio) == (a, b, io) and c not in (a, b)  # three distinct names
    assert orders == {"ABBA", "BABA"}


def test_greater_than_good_ends_later_bad_earlier_and_counterfactual_starts_at_01():
    for it in greater_than_task(seed=0, n=300).items:
        start, end = map(int, re.findall(r"\d{4}", it.good))
        _, wrong = map(int, re.findall(r"\d{4}", it.bad))
        assert start // 100 == end // 100 == wrong // 100 and wrong < start < end
        cf_start, cf_end = map(int, re.findall(r"\d{4}", it.counterfactual[0]))
        assert cf_start == start // 100 * 100 + 1 and cf_end == end


def test_induction_repeats_the_first_half_and_the_counterfactual_redraws_it():
    for it in induction_task(seed=0, n=200, length=5).items:
        assert all(x.startswith(INDUCTION_PREFIX) for x in (it.good, it.bad, *it.counterfactual))
        w, bad, cf = (x.removeprefix(INDUCTION_PREFIX).split() for x in (it.good, it.bad, it.counterfactual[0]))
        assert w[:5] == w[5:] and bad[-1] not in w
        assert cf[5:] == w[5:] and not set(cf[:5]) & (set(w) | {bad[-1]})
        assert all(x in INDUCTION_WORDS for x in w + cf)
    with pytest.raises(KmshcError, match="induction length"):
        induction_task(length=1)


@pytest.mark.slow
def test_counterfactuals_align_token_for_token_on_smollm2():
    """Names, words and digits are single SmolLM2 tokens, so every counterfactual aligns."""
    from kmshc.engine.encoding import encode
    from kmshc.engine.models import load_model
    _, tok = load_model("smollm2-135m")
    for name in CIRCUIT_TASKS:
        data = encode(make_task(name, seed=0), tok)  # raises on any misaligned counterfactual
        assert [len(s) for s in data.cf_seqs] == [len(s) for s in data.seqs]
    for w in IOI_NAMES + INDUCTION_WORDS:
        assert len(tok(" " + w, add_special_tokens=False)["input_ids"]) == 1, w


def test_distinct_items_skips_none_drops_duplicates_and_stops():
    from kmshc.tasks.base import PairItem, distinct_items
    draws = iter([None, PairItem("a", "b"), PairItem("a", "b"), None, PairItem("c", "d")] + [PairItem("a", "b")] * 1000)
    assert distinct_items(lambda rng: next(draws), 3, seed=0) == (PairItem("a", "b"), PairItem("c", "d"))
    assert len(distinct_items(lambda rng: PairItem(str(rng.random()), "x"), 5, seed=1)) == 5
