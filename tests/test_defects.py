"""Defective items (identical sentences or tokens) are skipped and recorded, or an error on request.

The fixtures are real BLiMP lines (see tests/fixtures/README.md): ``passive_1`` has two pairs
whose sentences are identical, ``principle_A_case_2`` five.
"""
from __future__ import annotations

import copy
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kmshc import cli
from kmshc.experiment import Experiment
from kmshc.tasks import load_blimp_jsonl, make_task, split_task
from kmshc.tasks.defects import IDENTICAL_TEXT, IDENTICAL_TOKENS, screen, skipped_summary
from kmshc.types import KmshcError

FIXTURES = Path(__file__).resolve().parent / "fixtures"
PASSIVE = FIXTURES / "blimp_passive_1_excerpt.jsonl"          # 22 lines; lines 6 and 17 are identical pairs
PRINCIPLE_A = FIXTURES / "blimp_principle_A_case_2_defects.jsonl"  # 5 lines, all identical pairs


def _no_tokenizer():
    raise AssertionError("the tokenizer was asked for")


@pytest.fixture(scope="module")
def cased():
    from kmshc.engine.tiny import tiny_tokenizer
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def uncased():
    """The tiny tokenizer with a lower-casing normaliser: 'The dog.' and 'the dog.' become the same tokens."""
    from tokenizers import normalizers

    from kmshc.engine.tiny import tiny_tokenizer
    tok = copy.deepcopy(tiny_tokenizer())
    tok.backend_tokenizer.normalizer = normalizers.Lowercase()
    return tok


def test_skip_leaves_out_the_real_identical_pairs_and_records_them():
    task = load_blimp_jsonl(PASSIVE)
    assert len(task) == 20 and [d.line for d in task.skipped] == [6, 17]
    assert {d.reason for d in task.skipped} == {IDENTICAL_TEXT}
    assert task.skipped[0].text == "Douglas's senator was left by Susan."
    assert all(it.good != it.bad for it in task.items) and [it.line for it in task.items[4:6]] == [5, 7]
    summary = skipped_summary(task)
    assert (summary["count"], summary["of"], summary["reasons"]) == (2, 22, {IDENTICAL_TEXT: 2})
    assert [i["line"] for i in summary["items"]] == [6, 17]


def test_error_policy_stops_at_the_first_defective_line():
    with pytest.raises(KmshcError, match=r"passive_1_excerpt\.jsonl:6: 'sentence_good' and 'sentence_bad' are "
                                         r"identical \(\"Douglas's senator was left by Susan\.\"\)"):
        load_blimp_jsonl(PASSIVE, on_defect="error")
    with pytest.raises(KmshcError, match="on_defect: expected one of skip, error, got 'drop'"):
        load_blimp_jsonl(PASSIVE, on_defect="drop")


def test_a_file_of_defective_items_only_is_an_error_that_says_so():
    with pytest.raises(KmshcError) as e:
        load_blimp_jsonl(PRINCIPLE_A)
    assert str(e.value) == (f"{PRINCIPLE_A}: no usable item left: all 5 items are defective "
                            "(identical sentences: 5; lines 1, 2, 3, 4, 5); nothing to score")
    with pytest.raises(KmshcError, match=r"defects\.jsonl:1: 'sentence_good' and 'sentence_bad' are identical"):
        load_blimp_jsonl(PRINCIPLE_A, on_defect="error")


def test_one_warning_line_per_file_with_count_reasons_and_first_lines(tmp_path, cased, caplog):
    both = tmp_path / "both.jsonl"  # 22 + 5 lines: 7 defective, at lines 6, 17, 23..27
    both.write_bytes(PASSIVE.read_bytes() + PRINCIPLE_A.read_bytes())
    with caplog.at_level(logging.WARNING, logger="kmshc.data"):
        task = screen(load_blimp_jsonl(both), lambda: cased)
    assert len(caplog.records) == 1
    assert caplog.records[0].getMessage() == (
        f"warning: {both}: skipped 7 of 27 items as defective (identical sentences: 7) at lines 6, 17, 23, 24, 25, "
        "…; use on_defect=error to stop instead")
    assert len(task) == 20 and len(task.skipped) == 7


def _pairs(path: Path, pairs: list[tuple[str, str]]) -> Path:
    path.write_text("".join(json.dumps({"sentence_good": g, "sentence_bad": b}) + "\n" for g, b in pairs))
    return path


def test_identical_tokenisation_is_found_with_the_tokenizer(tmp_path, uncased, caplog):
    p = _pairs(tmp_path / "case.jsonl", [("The dog runs.", "The dog run."), ("The dog runs.", "the dog runs."),
                                         ("A cat sleeps.", "A cat sleeps."), ("Cats sleep.", "Cats sleeps.")])
    with caplog.at_level(logging.WARNING, logger="kmshc.data"):
        task = screen(load_blimp_jsonl(p), lambda: uncased)
    assert [(d.line, d.reason) for d in task.skipped] == [(2, IDENTICAL_TOKENS), (3, IDENTICAL_TEXT)]
    assert [it.line for it in task.items] == [1, 4]
    assert "skipped 2 of 4 items as defective (identical sentences: 1, identical tokens: 1) at lines 2, 3" \
        in caplog.text
    q = _pairs(tmp_path / "case2.jsonl", [("The dog runs.", "The dog run."), ("The dog runs.", "the dog runs.")])
    with pytest.raises(KmshcError, match=r"case2\.jsonl:2: the two sentences of the pair tokenise identically "
                                         r"\('The dog runs\.' / 'the dog runs\.'\)"):
        screen(load_blimp_jsonl(q, on_defect="error"), lambda: uncased, on_defect="error")


def test_generated_tasks_never_ask_for_the_tokenizer(caplog):
    task = make_task("grammar", n=20)
    with caplog.at_level(logging.WARNING, logger="kmshc.data"):
        assert screen(task, _no_tokenizer) is task
    assert caplog.records == []


def test_splits_after_skipping_are_deterministic_and_those_of_the_clean_file(tmp_path):
    clean = tmp_path / "clean.jsonl"
    clean.write_text("".join(l for l in PASSIVE.read_text().splitlines(keepends=True)
                             if json.loads(l)["sentence_good"] != json.loads(l)["sentence_bad"]))
    skipped = split_task(load_blimp_jsonl(PASSIVE), seed=3)
    assert skipped == split_task(load_blimp_jsonl(PASSIVE), seed=3)
    want = split_task(load_blimp_jsonl(clean), seed=3)
    for name in ("train", "val", "test"):
        assert skipped[name].items == want[name].items and skipped[name].skipped == load_blimp_jsonl(PASSIVE).skipped


def test_experiment_records_the_skipped_items_and_checks_its_policy():
    a = Experiment(model="tiny-gpt2", task="blimp", data=str(PASSIVE))
    b = Experiment.from_dict(a.to_dict())
    assert a.splits == b.splits and sum(len(s) for s in a.splits.values()) == 20
    assert a.data_skipped == skipped_summary(load_blimp_jsonl(PASSIVE)) and a.data_skipped["count"] == 2
    with pytest.raises(KmshcError, match=r"passive_1_excerpt\.jsonl:6: .* identical"):
        _ = Experiment(model="tiny-gpt2", task="blimp", data=str(PASSIVE), on_defect="error").splits
    with pytest.raises(KmshcError, match="field 'on_defect': expected one of skip, error, got 'ignore'"):
        Experiment(on_defect="ignore")


def test_score_reports_the_file_level_skips_whatever_the_limit(capsys, caplog):
    argv = ["score", "--model", "tiny-gpt2", "--task", "blimp", "--data", str(PASSIVE)]
    with caplog.at_level(logging.WARNING, logger="kmshc.data"):
        assert cli.main(argv + ["--limit", "10"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n"] == 10 and out["skipped"]["count"] == 2 and out["skipped"]["of"] == 22
    assert [i["line"] for i in out["skipped"]["items"]] == [6, 17]
    assert "skipped 2 of 22 items as defective (identical sentences: 2) at lines 6, 17" in caplog.text
    assert cli.main(argv + ["--on_defect", "error"]) == 2
    assert "passive_1_excerpt.jsonl:6: 'sentence_good' and 'sentence_bad' are identical" in capsys.readouterr().err


@pytest.mark.slow
def test_score_subprocess_prints_one_warning_line_then_scores(tmp_path):
    """What a user sees: the warning alone on stderr (no logging set up), the JSON on stdout."""
    env = {**os.environ, "PYTHONPATH": str(FIXTURES.parents[1] / "src")}
    p = subprocess.run([sys.executable, "-m", "kmshc", "score", "--model", "tiny-gpt2", "--task", "blimp",
                        "--data", str(PASSIVE)], env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert p.stderr.splitlines() == [f"warning: {PASSIVE}: skipped 2 of 22 items as defective (identical "
                                     "sentences: 2) at lines 6, 17; use on_defect=error to stop instead"]
    assert json.loads(p.stdout)["n"] == 20


def test_searched_circuit_records_the_skipped_items(tmp_path):
    import importlib.util
    spec = importlib.util.spec_from_file_location("search_entry", FIXTURES.parents[1] / "search.py")
    entry = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(entry)
    entry.main(["--config", str(FIXTURES.parents[1] / "configs/search/tiny.yaml"), "--progress", "false",
                "--threshold", "0.0", "--experiment.task", "blimp", "--experiment.data", str(PASSIVE),
                "--experiment.n", "null", "--runs_dir", str(tmp_path), "--name", "d"])
    circ = json.loads((tmp_path / "d" / "circuit_searched.json").read_text())
    assert circ["data_skipped"] == skipped_summary(load_blimp_jsonl(PASSIVE))
    assert circ["config"]["experiment"]["on_defect"] == "skip"
