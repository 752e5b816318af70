"""search.py: every config loads; cold / warm / verify on a tiny model; run-directory rules."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import yaml

from kmshc.experiment import Experiment
from kmshc.search.config import SearchConfig
from kmshc.types import KmshcError, read_circuit

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs" / "search").glob("*.yaml"))


def load_entry():
    spec = importlib.util.spec_from_file_location("search_entry", REPO / "search.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


ENTRY = load_entry()
TINY = ["--config", str(REPO / "configs/search/tiny.yaml"), "--progress", "false"]


@pytest.fixture(scope="module")
def reachable() -> list[str]:
    """An absolute threshold the tiny random model reaches: its own full score on val."""
    import torch
    exp = ENTRY.parse(TINY).experiment
    return ["--threshold", str(exp.scorer_for("val")(torch.ones(exp.shape)) - 1e-6)]


def test_every_preset_exists():
    assert {p.stem for p in CONFIGS} >= {"tiny", "default", "blimp", "arithmetic", "word_problems", "paper",
                                          "paper-draft"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_loads_and_starts_with_its_command(path):
    first = path.read_text().splitlines()[0]
    assert first.startswith("# python search.py --config configs/search/" + path.name)
    cfg = ENTRY.parse(["--config", str(path)])
    assert isinstance(cfg, SearchConfig) and isinstance(cfg.experiment, Experiment)
    raw = yaml.safe_load(path.read_text())  # every value the file sets reaches the parsed config
    for key, value in raw.items():
        if key == "certificate":
            assert all(getattr(cfg.certificate, k) == v for k, v in value.items()), key
        elif key != "experiment":
            assert getattr(cfg, key) == value, key
    for key, value in raw.get("experiment", {}).items():
        got = getattr(cfg.experiment, key)
        assert (list(got) if isinstance(got, tuple) else got) == value, f"experiment.{key}"


def test_paper_presets_are_as_designed():
    paper = ENTRY.parse(["--config", str(REPO / "configs/search/paper.yaml")])
    assert (paper.semantics, paper.epsilon, paper.N, paper.K, paper.window, paper.baseline) == \
        ("paper", 0.25, 10, 10, 5, "complement")
    assert (paper.experiment.ablation, paper.experiment.scorer, paper.experiment.probe_dim,
            paper.macro_probe_dim, paper.ceil, paper.halve_when_large) == ("zero", "probe", 3, 10, True, True)
    draft = ENTRY.parse(["--config", str(REPO / "configs/search/paper-draft.yaml")])
    assert (draft.window_fraction, draft.threshold, draft.epsilon, draft.K, draft.certificate.confidence) == (0.2, 0.6, 0.1, 3, 0.95)
    assert tuple(draft.experiment.split_fractions) == (0.6, 0.2, 0.2)


def test_command_line_overrides_the_config():
    cfg = ENTRY.parse(TINY + ["--epsilon", "0.7", "--experiment.limit", "40", "--semantics", "paper"])
    assert (cfg.epsilon, cfg.experiment.limit, cfg.semantics) == (0.7, 40, "paper")


def test_settings_of_a_circuit_recover_the_bar_it_decided_against():
    from kmshc.search.config import settings_of
    from kmshc.types import Circuit
    search = {"epsilon": 0.9, "decision": "confident", "certificate": {"tau": 0.05}}
    val = {"score": 0.9, "threshold": 0.85, "units": "recovery lower bound"}
    old = Circuit("m", "t", ("L0H0",), 8, scores={"val": val}, config={"search": search})
    got = settings_of(old)  # bar_slack not recorded: from its bar 0.85 = 0.9 - 1.0 * 0.05
    assert got["bar_slack"] == pytest.approx(1.0) and "bar_slack" not in search
    assert SearchConfig(epsilon=0.9, bar_slack=got["bar_slack"]).bar == pytest.approx(0.85)
    new = Circuit("m", "t", ("L0H0",), 8, scores={"val": val}, config={"search": {**search, "bar_slack": 0.5}})
    assert settings_of(new)["bar_slack"] == 0.5  # a recorded slack is kept as it is
    point = Circuit("m", "t", ("L0H0",), 8, scores={"val": {**val, "units": "accuracy"}}, config={"search": search})
    assert "bar_slack" not in settings_of(point)  # point decisions have no slack to recover


def test_settings_of_a_circuit_from_before_controls_rerun_without_them():
    from kmshc.search.config import settings_of
    from kmshc.types import Circuit
    search = {"epsilon": 0.9, "adaptive": True, "looks": 4, "bar_slack": 0.5}
    old = settings_of(Circuit("m", "t", ("L0H0",), 8, config={"search": search}))
    assert (old["adaptive_controls"], old["spending_power"], old["looks"]) == (False, 2.0, 4)
    now = {**search, "adaptive_controls": True, "spending_power": 1.0}
    assert settings_of(Circuit("m", "t", ("L0H0",), 8, config={"search": now})) == now  # recorded: kept


def test_cold_then_resume_then_verify(tmp_path, reachable):
    TINY_R = TINY + reachable
    out = ENTRY.main(TINY_R + ["--runs_dir", str(tmp_path), "--name", "c"])
    path = tmp_path / "c" / "circuit_searched.json"
    circ = read_circuit(path)
    cert = circ.certificate
    assert out["heads"] == list(circ.heads) and circ.extra["method"] == "cold"
    assert circ.config["experiment"]["model"] == "tiny-gpt2" and circ.evaluations == out["evaluations"] > 0
    assert cert["split"] == "test" and cert["n"] == 60 and isinstance(cert["verified"], bool)
    assert circ.scores["val"]["score"] >= circ.scores["val"]["threshold"]
    assert {"full", "baseline", "threshold", "circuit", "removals", "failing_heads", "controls", "knockout",
            "epsilon_range"} <= set(cert)
    assert json.loads((tmp_path / "c" / "search_state.json").read_text())["done"]
    with pytest.raises(KmshcError, match="--overwrite"):
        ENTRY.main(TINY_R + ["--runs_dir", str(tmp_path), "--name", "c"])
    again = ENTRY.main(TINY_R + ["--runs_dir", str(tmp_path), "--name", "c", "--resume", "true"])
    assert again["heads"] == out["heads"] and again["evaluations"] == out["evaluations"]
    ver = ENTRY.main(TINY_R + ["--mode", "verify", "--circuit", str(path)])
    assert Path(ver["circuit"]).name == "circuit_verified.json" and ver["verified"] == out["verified"]


def _train_run(tmp_path: Path, heads: dict) -> Path:
    """A minimal train.py run directory for the tiny model: only ``gates.json`` with these heads."""
    run = tmp_path / "trained"
    run.mkdir()
    (run / "gates.json").write_text(json.dumps({"model": "tiny-gpt2", "task": "grammar", "n_layers": 2,
                                                "n_heads": 4, "tau": 0.5,
                                                "experiment": ENTRY.parse(TINY).experiment.to_dict(),
                                                "heads": heads}))
    return run


def test_warm_from_a_train_run_directory(tmp_path, reachable):
    run = _train_run(tmp_path, {f"L{l}H{h}": {"log_alpha": 0.0, "gate": g}
                                for l in range(2) for h, g in enumerate([0.9, 0.7, 0.2, 0.6])})
    out = ENTRY.main(TINY + reachable + ["--mode", "warm", "--from_run", str(run)])
    circ = read_circuit(run / "circuit_searched.json")
    assert out["method"] == "warm" and circ.extra["source"].endswith("gates.json")
    assert circ.certificate["removals"] and len(circ.certificate["removals"]) == len(circ.heads)


def test_warm_without_gates_is_a_clear_error(tmp_path):
    with pytest.raises(KmshcError, match="gates.json"):
        ENTRY.main(TINY + ["--mode", "warm", "--from_run", str(tmp_path)])


def test_a_second_search_in_the_same_run_directory_is_refused(tmp_path):
    import os
    import subprocess
    import sys
    from kmshc.search.rundir import LOCK, acquire_lock, release_lock
    out = tmp_path / "r"
    out.mkdir()
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (out / LOCK).write_text(str(other.pid))  # a live process holds the lock
        with pytest.raises(KmshcError, match=f"pid {other.pid}"):
            ENTRY.main(TINY + ["--runs_dir", str(tmp_path), "--name", "r"])
    finally:
        other.kill()
        other.wait()
    acquire_lock(out)  # the holder is gone: the stale lock is taken over
    assert (out / LOCK).read_text() == str(os.getpid())
    release_lock(out)
    assert not (out / LOCK).exists()


def test_warm_ranks_saturated_gates_by_log_alpha(tmp_path, reachable):
    """Every gate is 1.0 (saturated), so only log_alpha can order the deletion filter."""
    log_alpha = {f"L{l}H{h}": float((5 * (4 * l + h)) % 8) for l in range(2) for h in range(4)}
    run = _train_run(tmp_path, {n: {"log_alpha": a, "gate": 1.0} for n, a in log_alpha.items()})
    ENTRY.main(TINY + reachable + ["--mode", "warm", "--from_run", str(run), "--strategy", "ordered"])
    trace = json.loads((run / "search_state.json").read_text())["trace"]
    tried = [t["head"] for t in trace if t["event"] in ("drop_head", "keep_head")]
    by_rank = sorted(range(8), key=lambda i: (log_alpha[f"L{i // 4}H{i % 4}"], i))
    assert tried == by_rank[:len(tried)] and len(tried) >= 7  # the last head standing is never tried


def test_gates_json_with_a_non_numeric_log_alpha_names_the_field(tmp_path):
    from kmshc.search.gates_file import read_gates
    exp = ENTRY.parse(TINY).experiment
    (tmp_path / "gates.json").write_text(json.dumps({"experiment": exp.to_dict(),
                                                     "heads": {"L0H0": {"gate": 1.0, "log_alpha": "big"}}}))
    with pytest.raises(KmshcError, match=r"heads\.L0H0\.log_alpha"):
        read_gates(tmp_path)


@pytest.mark.parametrize("mode", ["cold", "warm"])
def test_search_margin_reaches_the_search(tmp_path, reachable, mode):
    """--search_margin raises U on the search split; above S(M) it is refused, in both modes."""
    args = TINY + reachable + ["--runs_dir", str(tmp_path), "--name", "m", "--search_margin", "0.5"]
    if mode == "warm":
        run = _train_run(tmp_path, {f"L{l}H{h}": {"log_alpha": 0.0, "gate": 1.0} for l in range(2) for h in range(4)})
        args += ["--mode", "warm", "--from_run", str(run)]
    with pytest.raises(KmshcError, match="search_margin"):
        ENTRY.main(args)
