"""`python -m kmshc score` in-process on tiny models: the JSON it prints and its user errors."""
from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from kmshc.cli import main
from kmshc.experiment import Experiment
from kmshc.engine.scoring import Scorer

REQUIRED = {"accuracy", "n", "model", "task", "ablation", "kept_heads"}


def _score(capsys, *args: str) -> dict:
    assert main(["score", *args]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1  # exactly one JSON object on stdout
    return json.loads(out[0])


@pytest.mark.parametrize("task", ["grammar", "arithmetic", "word_problems"])
def test_score_prints_one_json_object(capsys, task):
    r = _score(capsys, "--model", "tiny-gpt2", "--task", task, "--limit", "20")
    assert REQUIRED <= set(r)
    assert r["n"] == 20 and r["model"] == "tiny-gpt2" and r["kept_heads"] == "all"
    assert r["n_heads_total"] == 8
    assert r["accuracy"] == pytest.approx(_accuracy_in_process(task, limit=20), abs=1e-4)


def _accuracy_in_process(task: str, limit: int) -> float:
    """The same score through the library: the task's items after ``--limit``, all heads, zero ablation."""
    exp = Experiment(model="tiny-gpt2", task=task, limit=limit, ablation="zero")
    items = sum((exp.splits[k].items for k in ("train", "val", "test")), ())
    model, tok = exp.loaded
    return Scorer(model, tok, replace(exp.splits["train"], items=items), ablation="zero")(torch.ones(exp.shape))


def test_keep_none_all_and_list_differ(capsys):
    base = ["--model", "tiny-llama", "--task", "grammar", "--limit", "30"]
    full = _score(capsys, *base)
    none = _score(capsys, *base, "--keep", "none")
    some = _score(capsys, *base, "--keep", "L1H2,L0H1", "--ablation", "mean", "--split", "test")
    assert none["kept_heads"] == "none" and some["kept_heads"] == ["L0H1", "L1H2"]
    assert some["ablation"] == "mean" and some["n"] == 6 and some["split"] == "test"
    assert full["mean_margin"] != none["mean_margin"]


def test_blimp_file_and_label_task(capsys, tmp_path):
    data = tmp_path / "p.jsonl"
    data.write_text("".join(json.dumps({"sentence_good": f"The dog{'s' * (i % 2)} run{'s' * (1 - i % 2)}.",
                                        "sentence_bad": f"The dog{'s' * (i % 2)} run{'s' * (i % 2)}."}) + "\n"
                            for i in range(10)))
    r = _score(capsys, "--model", "tiny-gpt_neox", "--task", "blimp", "--data", str(data))
    assert r["task"] == "p" and r["n"] == 10
    labels = tmp_path / "l.jsonl"
    labels.write_text("".join(json.dumps({"prompt": f"{i} + 1 = {i + 1 + i % 2}. Answer:",
                                          "label": " False" if i % 2 else " True"}) + "\n" for i in range(10)))
    r = _score(capsys, "--model", "tiny-gpt2", "--task", "labels", "--data", str(labels),
               "--labels", " True", " False", "--scorer", "label_tokens")
    assert r["scorer"] == "label_tokens" and r["n"] == 10


@pytest.mark.parametrize("args,match", [
    (["--task", "blimp"], "--data"),
    (["--task", "grammar", "--keep", "L9H0"], "L9H0 has layer 9"),
    (["--task", "grammar", "--keep", "head3"], "expected a head name"),
    (["--task", "grammar", "--limit", "2"], "too few"),
    (["--task", "grammar", "--scorer", "label_tokens"], "needs a label task"),
])
def test_user_errors_exit_2_with_one_line(capsys, args, match):
    assert main(["score", "--model", "tiny-gpt2", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kmshc: error:") and match in err and "Traceback" not in err


def test_bad_data_line_is_reported(capsys, tmp_path):
    data = tmp_path / "broken.jsonl"
    data.write_text('{"sentence_good": "A b.", "sentence_bad": "B a."}\n{"sentence_good": "x"}\n')
    assert main(["score", "--model", "tiny-gpt2", "--task", "blimp", "--data", str(data)]) == 2
    assert f"{data}:2: missing field 'sentence_bad'" in capsys.readouterr().err
    with pytest.raises(Exception):  # --debug shows the real exception instead
        main(["--debug", "score", "--model", "tiny-gpt2", "--task", "blimp", "--data", str(data)])
