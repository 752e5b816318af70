"""Bad configs and run directories for ``train.py`` and ``search.py``, and a NaN during training.

Each error must come before the expensive part (the training loop, the search), name the key
or path and what was expected, exit with status 2 and print no traceback. Cases run in-process
(fast) and a few through the real scripts. A NaN that appears mid-training stops the run with
a message and leaves the last good checkpoint, from which training resumes.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch

from kmshc.types import KmshcError

REPO = Path(__file__).resolve().parents[1]
TINY_TRAIN = str(REPO / "configs" / "train" / "tiny.yaml")
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "WANDB_MODE": "offline",
       "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO / "tests")])}

sys.path.insert(0, str(REPO))
import search as search_cli  # noqa: E402  (entry points at the repo root)
import train as train_cli  # noqa: E402


class PoisonGates(L.Callback):
    """Test helper: turn one gate's ``log_alpha`` into NaN at ``step`` (what a diverging run looks like)."""

    def __init__(self, step: int = 15) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            with torch.no_grad():
                module.gates.log_alpha[0, 0] = float("nan")


def script(name: str, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, name, *argv], cwd=REPO, env=ENV, capture_output=True, text=True,
                          timeout=600)


def train(tmp: Path, *extra: str, name: str = "t"):
    return train_cli.main(["fit", "--config", TINY_TRAIN, "--runs_dir", str(tmp), "--name", name,
                           "--trainer.enable_progress_bar", "false", *extra])


@pytest.fixture
def search_cfg(tmp_path) -> list[str]:
    """A valid tiny cold search; the cases below break one thing each."""
    return ["--mode", "cold", "--runs_dir", str(tmp_path / "runs"), "--name", "s", "--epsilon", "0.5", "--N", "4",
            "--progress", "false", "--experiment.model", "tiny-llama", "--experiment.task", "grammar",
            "--experiment.n", "150"]


@pytest.fixture
def no_compute(monkeypatch):
    """Scoring a mask fails the test: config errors must come first."""
    import kmshc.engine.scoring

    def boom(*a, **k):
        raise AssertionError("a mask was scored before the config was checked")
    monkeypatch.setattr(kmshc.engine.scoring.Scorer, "outcomes", boom)


# ----------------------------------------------------------------------------- search configs
SEARCH_CASES = [
    ("epsilon_above_1", ["--epsilon", "1.5"], "epsilon: expected a value in (0, 1], got 1.5"),
    ("epsilon_zero", ["--epsilon", "0"], "epsilon: expected a value in (0, 1], got 0.0"),
    ("threshold_not_accuracy", ["--threshold", "1.2"], "threshold: expected an accuracy in [0, 1], got 1.2"),
    ("K_zero", ["--K", "0"], "K: expected a positive integer, got 0"),
    ("resume_and_overwrite", ["--resume", "true", "--overwrite", "true"], "--resume and --overwrite exclude each other"),
    ("resume_without_state", ["--resume", "true"], "no search state at"),
    ("warm_without_run", ["--mode", "warm"], "warm mode needs --from_run"),
    ("bad_experiment_field", ["--experiment.scorer", "nope"], "field 'scorer': expected one of"),
]


@pytest.mark.parametrize("extra,expect", [c[1:] for c in SEARCH_CASES], ids=[c[0] for c in SEARCH_CASES])
def test_search_config_errors_come_first(search_cfg, no_compute, extra, expect):
    with pytest.raises(KmshcError) as e:
        search_cli.main(search_cfg + extra)
    assert expect in str(e.value)


def test_search_K_larger_than_candidates(search_cfg):
    with pytest.raises(KmshcError, match=r"K: the bundle floor must be between 1 and \|C\| = 8, got 9"):
        search_cli.main(search_cfg + ["--K", "9"])


def test_search_unreachable_threshold_reports_numbers(search_cfg):
    with pytest.raises(KmshcError, match=r"threshold 0\.99 cannot be reached: the full model scores 0\.\d{4} on the"):
        search_cli.main(search_cfg + ["--threshold", "0.99"])


def test_search_existing_run_needs_overwrite_or_resume(search_cfg, tmp_path, no_compute):
    (tmp_path / "runs" / "s").mkdir(parents=True)
    (tmp_path / "runs" / "s" / "circuit_searched.json").write_text("{}")
    with pytest.raises(KmshcError, match="exists; pass --overwrite true to replace it or --resume true to continue"):
        search_cli.main(search_cfg)


def test_search_unwritable_runs_dir(search_cfg, tmp_path, no_compute):
    (tmp_path / "afile").write_text("")  # a file where a folder should be: unwritable even for root
    with pytest.raises(KmshcError, match="cannot write to the run directory"):
        search_cli.main(search_cfg + ["--runs_dir", str(tmp_path / "afile" / "runs")])


@pytest.mark.parametrize("cfg_text,expect", [
    ("epsilon: high\n", 'Parser key "epsilon"'),
    ("epsilon: 0.5\nfoo: 1\n", "foo"),
    ("experiment:\n  n: many\n", "experiment.n"),
], ids=["wrong_type", "unknown_key", "nested_wrong_type"])
def test_search_yaml_errors(tmp_path, capsys, cfg_text, expect):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(cfg_text)
    with pytest.raises(SystemExit) as e:
        search_cli.main(["--config", str(cfg)])
    assert e.value.code == 2
    assert expect in capsys.readouterr().err


@pytest.mark.slow
def test_real_search_script_errors(tmp_path, search_cfg):
    """Through the real script: exit 2, one message, no traceback; --debug shows it."""
    r = script("search.py", *search_cfg, "--epsilon", "1.5")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1] == "kmshc: error: epsilon: expected a value in (0, 1], got 1.5"
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("epsilon: 0.5\nfoo: 1\n")
    r = script("search.py", "--config", str(cfg))
    assert r.returncode == 2 and "Traceback" not in r.stderr and "foo" in r.stderr
    r = script("search.py", *search_cfg, "--epsilon", "1.5", "--debug")
    assert r.returncode != 0 and "Traceback" in r.stderr and "KmshcError" in r.stderr


# ----------------------------------------------------------------------------- train configs and runs
def test_train_existing_run_and_unwritable_dir(tmp_path):
    train(tmp_path, "--trainer.max_steps", "2")
    with pytest.raises(KmshcError, match="already holds a run .*pass --overwrite to replace it, --ckpt_path"):
        train(tmp_path, "--trainer.max_steps", "2")
    (tmp_path / "afile").write_text("")
    with pytest.raises(KmshcError, match="cannot write to the run directory"):
        train(tmp_path / "afile", "--trainer.max_steps", "2")


@pytest.mark.parametrize("extra,expect", [
    (["--model.lr", "fast"], "model.lr"),
    (["--model.foo", "1"], "foo"),
    (["--data.experiment.n", "-3"], "field 'n': expected a positive integer, got -3"),
], ids=["wrong_type", "unknown_key", "bad_experiment_value"])
def test_train_config_errors(tmp_path, capsys, extra, expect):
    try:
        train(tmp_path, *extra)
    except SystemExit as e:  # jsonargparse: usage + message on stderr, status 2
        assert e.code == 2
        assert expect in capsys.readouterr().err
    except KmshcError as e:
        assert expect in str(e)
    else:
        pytest.fail("a bad config was accepted")
    assert not (tmp_path / "t" / "checkpoints").exists()  # nothing was trained


@pytest.mark.slow
def test_nan_stops_training_and_keeps_the_last_good_checkpoint(tmp_path):
    """Real script: NaN at step 15 -> exit 2 with a message; last.ckpt (step 10) is finite and resumable."""
    r = script("train.py", "fit", "--config", TINY_TRAIN, "--runs_dir", str(tmp_path), "--name", "nan",
               "--trainer.enable_progress_bar", "false", "--trainer.callbacks+=test_reliability_runs.PoisonGates",
               "--trainer.callbacks.step", "15")
    assert r.returncode == 2, r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    msg = r.stderr.strip().splitlines()[-1]
    assert msg.startswith("kmshc: error: training step 15: the loss became nan") and "last.ckpt" in msg, msg
    run = tmp_path / "nan"
    assert not (run / "circuit_learned.json").exists()  # no final results from a broken state
    mid = json.loads((run / "gates.json").read_text())  # the mid-run gates are those of the good step 10
    assert all(v["log_alpha"] == v["log_alpha"] for v in mid["heads"].values())
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)  # safe to read back, too
    assert ckpt["global_step"] == 10 and torch.isfinite(ckpt["state_dict"]["gates.log_alpha"]).all()
    cli = train(tmp_path, "--ckpt_path", str(run / "checkpoints" / "last.ckpt"), name="nan")
    assert cli.trainer.global_step == 20
    gates = json.loads((run / "gates.json").read_text())
    assert all(v["gate"] == v["gate"] for v in gates["heads"].values())  # no NaN in the results
