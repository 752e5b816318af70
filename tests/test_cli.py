"""The ``kmshc`` command: every verb listed, one argument style, configs found from anywhere,
and ``train`` / ``search`` / ``verify`` running what train.py and search.py run."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kmshc.cli import build_parser, main
from kmshc.entry.configs import resolve_config, resolve_config_args
from kmshc.entry.train import train_argv
from kmshc.types import KmshcError, read_circuit

REPO = Path(__file__).resolve().parents[1]
VERBS = {"score", "train", "search", "verify", "compare"}
ENV = {**os.environ, "PYTHONPATH": str(REPO / "src"), "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1"}


def _verbs() -> dict:
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return sub.choices


def test_help_lists_every_registered_verb():
    text = build_parser().format_help()
    assert VERBS <= set(_verbs())
    assert all(verb in text for verb in _verbs())


def test_one_argument_style_underscores():
    for verb, parser in _verbs().items():
        for action in parser._actions:
            for flag in action.option_strings:
                assert "-" not in flag.lstrip("-"), f"kmshc {verb} {flag}: use underscores"


def test_train_means_fit_unless_a_subcommand_is_given():
    assert train_argv(["--config", "c.yaml"]) == ["fit", "--config", "c.yaml"]
    assert train_argv(["validate", "--config", "c.yaml"])[0] == "validate"
    assert train_argv(["--help"]) == ["--help"]


def test_configs_resolve_from_any_directory_and_from_an_installed_copy(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # not the checkout: found through the package's location
    assert Path(resolve_config("configs/train/tiny.yaml")) == REPO / "configs/train/tiny.yaml"
    installed = tmp_path / "site" / "kmshc"  # a wheel: the copy inside the package
    (installed / "configs/search").mkdir(parents=True)
    (installed / "configs/search/tiny.yaml").write_text("mode: cold\n")
    got = resolve_config_args(["--config", "configs/search/tiny.yaml", "--config=configs/search/tiny.yaml"],
                              roots=[tmp_path / "no-checkout", installed])
    assert got == ["--config", str(installed / "configs/search/tiny.yaml"),
                   f"--config={installed / 'configs/search/tiny.yaml'}"]
    (tmp_path / "configs/search").mkdir(parents=True)  # the user's own file wins
    (tmp_path / "configs/search/tiny.yaml").write_text("mode: warm\n")
    assert resolve_config("configs/search/tiny.yaml", roots=[installed]) == "configs/search/tiny.yaml"
    assert resolve_config("configs/search/missing.yaml", roots=[installed]) == "configs/search/missing.yaml"


def test_search_user_error_is_one_line_and_debug_anywhere_raises(capsys):
    args = ["search", "--config", "configs/search/tiny.yaml", "--epsilon", "1.5"]
    assert main(args) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == "kmshc: error: epsilon: expected a value in (0, 1], got 1.5"
    with pytest.raises(KmshcError, match="epsilon"):
        main([*args, "--debug"])


def test_train_search_verify_from_another_directory(tmp_path, monkeypatch, capsys):
    """``kmshc train`` then warm ``kmshc search`` then ``kmshc verify``, with the shipped configs
    named by their relative paths from a directory that is not the checkout."""
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--config", "configs/train/tiny.yaml", "--runs_dir", "runs", "--name", "t",
                 "--trainer.max_steps", "4", "--trainer.enable_progress_bar", "false"]) == 0
    run = tmp_path / "runs" / "t"
    assert (run / "gates.json").exists() and (run / "circuit_learned.json").exists()
    capsys.readouterr()
    search = ["--config", "configs/search/tiny.yaml", "--progress", "false"]
    assert main(["search", *search, "--mode", "warm", "--from_run", str(run)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["method"] == "warm" and Path(out["circuit"]) == run / "circuit_searched.json"
    assert main(["verify", out["circuit"], *search]) == 0  # the circuit as the verb's argument
    verified = read_circuit(run / "circuit_verified.json")
    assert list(verified.heads) == out["heads"] and verified.certificate["verified"] == out["verified"]


@pytest.mark.slow
def test_console_help_and_the_search_shim_run_as_programs():
    r = subprocess.run([sys.executable, "-m", "kmshc", "--help"], env=ENV, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0 and all(v in r.stdout for v in VERBS), r.stdout
    r = subprocess.run([sys.executable, "search.py", "--help"], cwd=REPO, env=ENV, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0 and "--from_run" in r.stdout and "--experiment.model" in r.stdout


@pytest.mark.parametrize("verb", ["score", "train", "search", "verify", "compare", "tasks", "show", "rank", "toy",
                                  "redundancy"])
def test_each_verb_prints_its_own_usage(verb, capsys):
    with pytest.raises(SystemExit) as e:
        main([verb, "--help"])
    assert e.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: kmshc {verb}")


def test_verify_takes_the_circuit_as_its_argument_or_as_circuit():
    from kmshc.entry.search import parse, verify_argv
    assert parse(verify_argv(["c.json"]), verb="verify").circuit == "c.json"
    assert parse(verify_argv(["--progress", "false", "c.json"]), verb="verify").circuit == "c.json"
    assert parse(verify_argv(["--circuit", "c.json"]), verb="verify").circuit == "c.json"
    with pytest.raises(KmshcError, match="two circuits"):
        parse(verify_argv(["a.json", "--circuit", "b.json"]), verb="verify")


def test_a_bad_train_value_names_a_command_that_exists(capsys):
    with pytest.raises(SystemExit):
        main(["train", "fit", "--config", "configs/train/tiny.yaml", "--model.lam", "abc"])
    err = capsys.readouterr().err
    assert "model.lam" in err and "run: kmshc train fit --help" in err, err


def test_a_warm_search_from_a_missing_run_errors_before_any_progress_bar(tmp_path, capsys):
    missing = tmp_path / "no-such-run"
    assert main(["search", "--config", "configs/search/tiny.yaml", "--mode", "warm", "--from_run", str(missing)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kmshc: error: ") and str(missing) in err and "search (warm)" not in err, err
