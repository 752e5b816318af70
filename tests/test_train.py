"""train.py end to end on the tiny config: outputs, checkpoints without the frozen model,
frozen weights untouched, determinism, resume, DDP, and every shipped config parses."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import train  # noqa: E402  (the entry point at the repo root)

from kmshc.experiment import Experiment  # noqa: E402
from kmshc.tasks.files import resolve_data_path  # noqa: E402
from kmshc.types import heads_to_mask, read_circuit  # noqa: E402

TINY = str(ROOT / "configs" / "train" / "tiny.yaml")
ENV = {**os.environ, "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def fit(tmp: Path, *extra: str, name: str = "t") -> "train.TrainCLI":
    """Run the tiny config in-process; returns the CLI (model, datamodule, trainer)."""
    return train.main(["fit", "--config", TINY, "--runs_dir", str(tmp), "--name", name,
                       "--trainer.enable_progress_bar", "false", *extra])


def log_alpha(run: Path) -> dict:
    return {k: v["log_alpha"] for k, v in json.loads((run / "gates.json").read_text())["heads"].items()}


@pytest.mark.parametrize("path", sorted((ROOT / "configs" / "train").glob("*.yaml")), ids=lambda p: p.name)
def test_every_config_parses(path, capsys):
    first = path.read_text().splitlines()[0]
    assert first.startswith("# python train.py fit --config configs/train/" + path.name), first
    with pytest.raises(SystemExit) as e:
        train.main(["fit", "--config", str(path), "--print_config"])
    assert e.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    exp = Experiment(**printed["data"]["experiment"])  # checks scorer and ablation names
    if exp.data and os.environ.get("KMSHC_DATA"):  # BLiMP lives outside the checkout, named by $KMSHC_DATA
        assert (ROOT / resolve_data_path(exp.data)).exists(), exp.data
    assert printed["name"] == path.stem


# Messages a user cannot act on, each silenced where it arises (train entry, models.load_model).
NOISE = ("args parameter is intended", "litlogger", "anonymous setting", "LeafSpec", "Loading weights")


@pytest.mark.slow
def test_tiny_fit_subprocess_writes_the_run_files(tmp_path):
    r = subprocess.run([sys.executable, "train.py", "fit", "--config", TINY, "--runs_dir", str(tmp_path),
                        "--log_to", "wandb"], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert not [n for n in NOISE if n in r.stdout + r.stderr], r.stderr[-3000:]
    run = tmp_path / "tiny"
    assert "run directory:" in r.stdout
    for f in ("config.yaml", "gates.json", "circuit_learned.json", "gates_heatmap.png", "checkpoints/last.ckpt"):
        assert (run / f).exists(), f
    assert (run / "gates_heatmap.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    gates = json.loads((run / "gates.json").read_text())
    assert (gates["n_layers"], gates["n_heads"]) == (2, 4) and len(gates["heads"]) == 8
    assert gates["experiment"]["model"] == "tiny-gpt2"
    c = read_circuit(run / "circuit_learned.json")
    assert c.extra["method"] == "learned" and set(c.extra["gates"]) == set(gates["heads"])
    assert c.config["experiment"] == gates["experiment"]
    assert list(c.heads) == sorted((k for k, v in gates["heads"].items() if v["gate"] > 0.5),
                                   key=lambda n: tuple(map(int, n[1:].split("H"))))
    exp = Experiment.from_dict(c.config["experiment"])  # the recorded scores are S(C) on each split
    for split in ("val", "test"):
        acc, (lo, hi) = c.scores[split]["accuracy"], c.scores[split]["ci"]
        assert acc == pytest.approx(exp.scorer_for(split)(heads_to_mask(c.heads, 2, 4)), abs=1e-6)
        assert lo <= acc <= hi
    # a second run into the same directory is refused without --overwrite
    r2 = subprocess.run([sys.executable, "train.py", "fit", "--config", TINY, "--runs_dir", str(tmp_path)],
                        cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert r2.returncode == 2 and "--overwrite" in r2.stderr


def test_checkpoint_holds_only_gates_and_model_is_untouched(tmp_path):
    cli = train.TrainCLI(train.GateModule, train.GateDataModule, run=False,
                         args=["--config", TINY, "--runs_dir", str(tmp_path), "--trainer.enable_progress_bar", "false",
                               "--model.sparsity", "lagrangian", "--model.target", "3", "--model.warmup_steps", "10",
                               "--model.settle_steps", "5"])
    lm = cli.model.lm
    before = {k: v.clone() for k, v in lm.state_dict().items()}
    la0 = cli.model.gates.log_alpha.detach().clone()
    cli.trainer.fit(cli.model, cli.datamodule)
    assert not lm.training  # Lightning's train()/eval() switching never reached the frozen model
    assert all(torch.equal(before[k], v) for k, v in lm.state_dict().items())
    assert not torch.equal(la0, cli.model.gates.log_alpha.detach())  # the gates did learn
    ckpt = torch.load(tmp_path / "tiny" / "checkpoints" / "last.ckpt", weights_only=False)
    assert set(ckpt["state_dict"]) == {"gates.log_alpha", "controller.lambda1", "controller.lambda2", "controller.gap"}
    assert float(ckpt["state_dict"]["controller.lambda1"]) != 0.0


def test_same_seed_same_gates_and_resume(tmp_path):
    fit(tmp_path, name="a")
    fit(tmp_path, name="b")
    a, b = log_alpha(tmp_path / "a"), log_alpha(tmp_path / "b")
    assert a == b
    fit(tmp_path, "--seed_everything", "1", name="c")
    assert log_alpha(tmp_path / "c") != a
    # resume: stop at 10 steps, then continue to 20 from the checkpoint
    fit(tmp_path, "--trainer.max_steps", "10", name="r")
    cli = fit(tmp_path, "--ckpt_path", str(tmp_path / "r" / "checkpoints" / "last.ckpt"), name="r")
    assert cli.trainer.global_step == 20
    assert json.loads((tmp_path / "r" / "circuit_learned.json").read_text())["steps"] == 20


@pytest.mark.slow
def test_ddp_two_cpu_ranks_keep_identical_gates(tmp_path):
    r = subprocess.run([sys.executable, "train.py", "fit", "--config", TINY, "--runs_dir", str(tmp_path),
                        "--trainer.devices", "2", "--trainer.strategy", "ddp", "--trainer.enable_progress_bar", "false",
                        "--trainer.callbacks+=kmshc.train.run.RankGatesDump",
                        "--trainer.callbacks.dirpath", str(tmp_path)],
                       cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    g0 = json.loads((tmp_path / "gates_rank0.json").read_text())
    g1 = json.loads((tmp_path / "gates_rank1.json").read_text())
    assert g0 == g1
    assert g0 != [[3.0] * 4] * 2  # trained, not just the initial value
    assert (tmp_path / "tiny" / "circuit_learned.json").exists()


def test_score_splits_choose_which_splits_the_learned_circuit_is_scored_on(tmp_path):
    """``--score_splits`` decides what circuit_learned.json holds: the main job skips the end-of-run
    scoring (its search and certificate score val and test themselves), the analysis grid keeps it."""
    fit(tmp_path, "--score_splits", "[]", "--trainer.max_steps", "2", name="none")
    fit(tmp_path, "--score_splits", "[test]", "--trainer.max_steps", "2", name="test")
    assert read_circuit(tmp_path / "none" / "circuit_learned.json").scores == {}
    test = read_circuit(tmp_path / "test" / "circuit_learned.json").scores
    assert set(test) == {"test"} and test["test"]["n"] > 0
    with pytest.raises(SystemExit):
        fit(tmp_path, "--score_splits", "[train]", name="bad")


def test_a_checkpoint_whose_hyperparameters_say_tau_sets_the_gate_threshold():
    module = train.GateModule(Experiment(model="tiny-gpt2", task="grammar", n=20))
    module.on_load_checkpoint({"hyper_parameters": {"tau": 0.7}})
    assert module.hparams.gate_threshold == 0.7
    module.on_load_checkpoint({"hyper_parameters": {"tau": 0.2, "gate_threshold": 0.6}})
    assert module.hparams.gate_threshold == 0.7  # a checkpoint that has both keeps the configured value
