"""Task generators, seeded splits and task-file readers."""
from __future__ import annotations

import json
import random
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kmshc.engine.encoding import encode
from kmshc.tasks import (ARITHMETIC_PRESETS, Task, arithmetic_task, grammar_task, load_blimp_jsonl,
                         load_label_jsonl, make_task, split_task, word_problem_task)
from kmshc.tasks.base import PairItem
from kmshc.tasks.generators import perturb
from kmshc.types import KmshcError

GENERATORS = {"grammar": grammar_task, "arithmetic": arithmetic_task, "word_problems": word_problem_task,
              "arithmetic_paper": lambda **kw: arithmetic_task(preset="paper", ops="+-", **kw)}


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_generators_deterministic_per_seed_and_differ_across_seeds(name):
    gen = GENERATORS[name]
    a, b, c = gen(seed=1, n=200), gen(seed=1, n=200), gen(seed=2, n=200)
    assert a.items == b.items and len(a) == 200 and a.kind == "pairs"
    assert a.items != c.items
    assert len(set(a.items)) == len(a.items)  # no duplicate pairs
    assert all(it.good != it.bad for it in a.items)
    # Minimal pairs: the two sentences differ in one place only (a common prefix and suffix).
    for it in a.items[:50]:
        g, w = it.good.split(), it.bad.split()
        assert len(g) == len(w) and sum(x != y for x, y in zip(g, w)) == 1, it


@settings(max_examples=300, deadline=None)
@given(c=st.integers(min_value=2, max_value=5000), seed=st.integers(0, 2**31))
def test_perturbation_in_half_to_one_and_a_half_and_never_correct(c, seed):
    w = perturb(c, random.Random(seed))
    assert 0.5 * c <= w <= 1.5 * c and w != c


def _answers(item: PairItem) -> tuple[int, int]:
    """The last number of the good and the bad sentence: the true and the perturbed answer."""
    return int(re.findall(r"\d+", item.good)[-1]), int(re.findall(r"\d+", item.bad)[-1])


@pytest.mark.parametrize("task", [
    arithmetic_task(seed=0, n=300), arithmetic_task(seed=0, n=300, preset="paper", ops="+-"),
    arithmetic_task(seed=0, n=300, ops="-"), word_problem_task(seed=0, n=300)], ids=lambda t: t.source)
def test_generated_wrong_answers_follow_the_paper(task):
    for it in task.items:
        c, w = _answers(it)
        assert 0.5 * c <= w <= 1.5 * c and w != c, it


def test_arithmetic_answers_are_correct_and_in_range():
    lo, hi = ARITHMETIC_PRESETS["paper"]
    assert (lo, hi) == (1, 1000)
    for preset, ops in (("paper", "+-"), ("small", "+")):
        task = arithmetic_task(seed=3, n=200, preset=preset, ops=ops)
        lo, hi = ARITHMETIC_PRESETS[preset]
        for it in task.items:
            m = re.search(r"(\d+) ?([+-]) ?(\d+) ?= ?(\d+)\D*$", it.good)
            a, op, b, c = int(m[1]), m[2], int(m[3]), int(m[4])
            assert lo <= a <= hi and lo <= b <= hi and op in ops
            assert c == (a + b if op == "+" else a - b)
    assert arithmetic_task(n=50, low=5, high=9).name.endswith("5-9")


def test_grammar_has_both_phenomena_and_valid_options():
    task = grammar_task(seed=0, n=100)
    dets = sum(any(d in it.good.split() for d in ("this", "that", "these", "those")) for it in task.items)
    assert 30 <= dets <= 70  # equal shares of det-noun and subject-verb pairs
    only = grammar_task(seed=0, n=40, phenomena=("subject_verb",))
    assert all(it.good.startswith("The ") for it in only.items)
    with pytest.raises(KmshcError, match="unknown grammar phenomenon"):
        grammar_task(phenomena=("islands",))


def test_generator_arguments_are_checked():
    with pytest.raises(KmshcError, match="unknown arithmetic preset"):
        arithmetic_task(preset="huge")
    with pytest.raises(KmshcError, match="0 <= low <= high"):
        arithmetic_task(low=10, high=3)
    with pytest.raises(KmshcError, match="ops"):
        arithmetic_task(ops="*")
    with pytest.raises(KmshcError, match="unknown task"):
        make_task("poetry")
    with pytest.raises(KmshcError, match="--data"):
        make_task("blimp")


@pytest.mark.parametrize("n", [10, 57, 200])
def test_splits_are_60_20_20_disjoint_and_seeded(n):
    task = make_task("grammar", n=n)
    s = split_task(task, seed=4)
    sizes = {k: len(v) for k, v in s.items()}
    assert sum(sizes.values()) == n
    assert abs(sizes["train"] - 0.6 * n) <= 1 and abs(sizes["val"] - 0.2 * n) <= 1
    parts = [set(s[k].items) for k in ("train", "val", "test")]
    assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
    assert set().union(*parts) == set(task.items)
    assert split_task(task, seed=4) == s
    assert split_task(task, seed=5)["test"].items != s["test"].items
    limited = split_task(task, seed=4, limit=10)
    assert sum(len(v) for v in limited.values()) == 10


def test_split_errors():
    task = make_task("grammar", n=20)
    with pytest.raises(KmshcError, match="too few"):
        split_task(task, limit=2)
    with pytest.raises(KmshcError, match="positive"):
        split_task(task, limit=0)
    with pytest.raises(KmshcError, match="summing to 1"):
        split_task(task, fractions=(0.5, 0.5, 0.5))


# ----------------------------------------------------------------------- files
def _write(path, lines):
    path.write_text("".join(l if isinstance(l, str) else json.dumps(l) for l in lines))
    return path


def test_a_data_path_may_start_with_kmshc_data(tmp_path, monkeypatch):
    (tmp_path / "blimp").mkdir()
    _write(tmp_path / "blimp" / "p.jsonl", [{"sentence_good": "A cat sleeps.", "sentence_bad": "A cat sleep."}, "\n"])
    monkeypatch.setenv("KMSHC_DATA", str(tmp_path))
    for spelling in ("$KMSHC_DATA/blimp/p.jsonl", "${KMSHC_DATA}/blimp/p.jsonl"):
        assert make_task("blimp", data=spelling).name == "p"
    monkeypatch.delenv("KMSHC_DATA")
    with pytest.raises(KmshcError, match=r"\$KMSHC_DATA/blimp/p.jsonl: .*KMSHC_DATA is not set"):
        make_task("blimp", data="$KMSHC_DATA/blimp/p.jsonl")


def test_blimp_reader_reads_fields_and_locations(tmp_path):
    p = _write(tmp_path / "ok.jsonl", [{"sentence_good": "A cat sleeps.", "sentence_bad": "A cat sleep.", "x": 1},
                                        "\n", "\n", {"sentence_good": "Dogs run.", "sentence_bad": "Dogs runs."}, "\n"])
    task = load_blimp_jsonl(p)
    assert task.name == "ok" and task.kind == "pairs" and len(task) == 2
    assert task.items[1] == PairItem("Dogs run.", "Dogs runs.") and task.items[1].where == f"{p}:3"


@pytest.mark.parametrize("lines,match", [
    ([{"sentence_good": "a b.", "sentence_bad": "b a."}, "\n", "{oops\n"], r":2: malformed JSON"),
    ([{"sentence_good": "a b.", "sentence_bad": "b a."}, "\n", {"sentence_good": "x y."}, "\n"],
     r":2: missing field 'sentence_bad'"),
    (["[1, 2]\n"], r":1: expected a JSON object"),
    ([{"sentence_good": "same.", "sentence_bad": "same."}, "\n"], r": no usable item left: .*identical sentences: 1"),
    ([{"sentence_good": "", "sentence_bad": "x."}, "\n"], r":1: field 'sentence_good' must be a non-empty"),
    (["\n", "  \n"], "empty"),
    ([], "empty"),
])
def test_blimp_reader_errors_name_file_and_line(tmp_path, lines, match):
    p = _write(tmp_path / "bad.jsonl", lines)
    with pytest.raises(KmshcError, match=match) as e:
        load_blimp_jsonl(p)
    assert str(p) in str(e.value)


def test_missing_and_non_utf8_files(tmp_path):
    with pytest.raises(KmshcError, match="not found"):
        load_blimp_jsonl(tmp_path / "nope.jsonl")
    with pytest.raises(KmshcError, match="directory"):
        load_blimp_jsonl(tmp_path)
    p = tmp_path / "latin.jsonl"
    p.write_bytes(b'{"sentence_good": "ok.", "sentence_bad": "no."}\n{"sentence_good": "caf\xe9"}\n')
    with pytest.raises(KmshcError, match=r":2: not valid UTF-8"):
        load_blimp_jsonl(p)


def test_label_reader_and_errors(tmp_path):
    p = _write(tmp_path / "l.jsonl", [{"prompt": "2+2=4. Answer:", "label": " True"}, "\n",
                                      {"prompt": "2+2=5. Answer:", "label": " False"}, "\n"])
    task = load_label_jsonl(p, [" True", " False"])
    assert [it.label for it in task.items] == [0, 1] and task.labels == (" True", " False")
    with pytest.raises(KmshcError, match=r":2: field 'label' is ' False'"):
        load_label_jsonl(p, [" True", " Maybe"])
    with pytest.raises(KmshcError, match="at least two"):
        load_label_jsonl(p, [" True"])
    with pytest.raises(KmshcError, match="distinct"):
        load_label_jsonl(p, [" True", " True"])


def test_encode_rejects_identical_tokenisation_and_multi_token_labels():
    from kmshc.engine.tiny import tiny_tokenizer
    tok = tiny_tokenizer()
    # Different strings, same tokens: the tokenizer's normaliser is identity, so use a real
    # collision: the start token text itself is split the same way in both sentences.
    same = Task("t", "pairs", (PairItem("The cat.", "The cat.", where="f.jsonl:7"),))
    with pytest.raises(KmshcError, match=r"f\.jsonl:7: .*tokenise identically"):
        encode(same, tok)
    labels = Task("l", "labels", (), labels=(" True", " Frobnicated"))
    with pytest.raises(KmshcError, match="no items"):
        encode(labels, tok)
    from kmshc.tasks.base import LabelItem
    labels = Task("l", "labels", (LabelItem("Is it?", 0),), labels=(" True", " Frobnicated"))
    with pytest.raises(KmshcError, match="' Frobnicated' is .* tokens"):
        encode(labels, tok)
