"""Nothing lost: real processes killed with SIGKILL resume from what they saved.

* search.py is killed once ``search_state.json`` records a few evaluations; ``--resume true``
  then reaches the same circuit, certificate and evaluation count as an uninterrupted run with
  the same seed (the reference runs in-process, twice, which also checks determinism; the
  killed and resumed runs are real CLIs).
* train.py is killed once a checkpoint exists; ``--ckpt_path .../last.ckpt`` resumes from that
  step (not from 0) and finishes the run.

Tiny random Llama (4 layers x 8 heads, saved to a folder) on 300 generated grammar pairs: a
search takes ~20 evaluations, slow enough to be killed in the middle, fast enough for CI.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "WANDB_MODE": "offline",
       "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(REPO / "src")}


class StepCounter(L.Callback):
    """Records where a (resumed) fit starts, its gates at that point, and how many steps it runs."""

    def __init__(self) -> None:
        self.start_step, self.start_log_alpha, self.steps = None, None, 0

    def on_train_start(self, trainer, module) -> None:
        self.start_step, self.start_log_alpha = trainer.global_step, module.gates.log_alpha.detach().clone()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.steps += 1


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory) -> Path:
    from kmshc.engine.tiny import tiny_model
    d = tmp_path_factory.mktemp("llama4x8")
    model, tok = tiny_model("llama", n_layers=4, n_heads=8, width=64, seed=0)
    model.save_pretrained(d)
    tok.save_pretrained(d)
    return d


def search_yaml(tmp: Path, model: Path) -> Path:
    cfg = tmp / "search.yaml"
    cfg.write_text(f"# python search.py --config {cfg}\nmode: cold\nsemantics: keep\nepsilon: 0.5\nN: 4\n"
                   f"seed: 0\nprogress: false\nruns_dir: {tmp / 'runs'}\nexperiment:\n  model: {model}\n"
                   "  task: grammar\n  n: 300\n  ablation: mean\n  seed: 0\n")
    return cfg


def _json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def kill_when(proc: subprocess.Popen, ready, timeout: float = 300.0) -> None:
    """Poll ``ready()`` every 50 ms; SIGKILL ``proc`` as soon as it holds."""
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < timeout:
            if proc.poll() is not None:
                out, err = proc.communicate()
                pytest.fail(f"process ended (rc {proc.returncode}) before it could be killed:\n{err[-2000:]}")
            if ready():
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=60)
                assert proc.returncode == -signal.SIGKILL
                return
            time.sleep(0.05)
        pytest.fail("the process never reached the kill point")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def comparable(circuit: dict) -> dict:
    """A circuit minus what legitimately differs between two runs: wall times, cost and the run name."""
    c = json.loads(json.dumps(circuit))
    c.pop("wall_time_s", None)
    c.pop("example_forwards", None)  # cost, not result: a resumed search rebuilds its prefix cache
    c["certificate"].pop("wall_time_s", None)
    for key in ("name", "resume", "overwrite"):
        c["config"]["search"].pop(key, None)
    return c


@pytest.mark.slow
def test_search_killed_resumes_to_the_uninterrupted_circuit(tmp_path, llama_dir):
    from kmshc.types import read_circuit
    cfg = search_yaml(tmp_path, llama_dir)
    sys.path.insert(0, str(REPO))
    try:
        import search as search_cli
    finally:
        sys.path.remove(str(REPO))
    search_cli.main(["--config", str(cfg), "--name", "reference"])  # uninterrupted, in-process
    reference = json.loads((tmp_path / "runs" / "reference" / "circuit_searched.json").read_text())
    search_cli.main(["--config", str(cfg), "--name", "reference2"])  # determinism: same seed, same everything
    reference2 = json.loads((tmp_path / "runs" / "reference2" / "circuit_searched.json").read_text())
    assert comparable(reference2) == comparable(reference)

    run = tmp_path / "runs" / "killed"
    state = run / "search_state.json"
    proc = subprocess.Popen([sys.executable, "search.py", "--config", str(cfg), "--name", "killed"], cwd=REPO,
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    kill_when(proc, lambda: (_json(state) or {}).get("evaluations", 0) >= 4)
    saved = _json(state)
    assert saved is not None and not saved["done"], "the state file must be whole and unfinished after the kill"
    assert not (run / "circuit_searched.json").exists()
    assert 4 <= saved["evaluations"] < reference["evaluations"]

    resumed = subprocess.run([sys.executable, "search.py", "--config", str(cfg), "--name", "killed",
                              "--resume", "true"], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    result = json.loads((run / "circuit_searched.json").read_text())
    assert result["heads"] == reference["heads"]
    assert result["evaluations"] == reference["evaluations"]
    assert comparable(result) == comparable(reference)
    read_circuit(run / "circuit_searched.json")  # and the file is a valid circuit
    final = _json(state)
    assert final["done"] and final["log"][: saved["evaluations"]] == saved["log"]  # replayed, not recomputed


@pytest.mark.slow
def test_training_killed_resumes_from_its_last_checkpoint(tmp_path):
    """train.py killed with SIGKILL once last.ckpt exists; --ckpt_path continues from that step to the end."""
    sys.path.insert(0, str(REPO))
    try:
        import train as train_cli
    finally:
        sys.path.remove(str(REPO))
    import torch
    base = ["fit", "--config", str(REPO / "configs" / "train" / "tiny.yaml"), "--runs_dir", str(tmp_path),
            "--name", "killed", "--trainer.max_steps", "40", "--trainer.enable_progress_bar", "false"]
    ckpt = tmp_path / "killed" / "checkpoints" / "last.ckpt"
    proc = subprocess.Popen([sys.executable, "train.py", *base], cwd=REPO, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    kill_when(proc, ckpt.exists)
    saved = torch.load(ckpt, weights_only=True)  # whole (atomic save) and safe to read back
    step = saved["global_step"]
    assert 10 <= step < 40 and not (tmp_path / "killed" / "circuit_learned.json").exists()

    cli = train_cli.main([*base, "--ckpt_path", str(ckpt), "--trainer.callbacks+=test_kill_resume.StepCounter"])
    counter = next(c for c in cli.trainer.callbacks if type(c).__name__ == "StepCounter")
    # it started from the checkpoint (step and gates), not from scratch, and ran only the remaining steps
    assert counter.start_step == step and counter.steps == 40 - step
    assert torch.equal(counter.start_log_alpha, saved["state_dict"]["gates.log_alpha"])
    assert cli.trainer.global_step == 40
    assert json.loads((tmp_path / "killed" / "circuit_learned.json").read_text())["steps"] == 40
