"""Same seed, config and machine -> the same gates, the same learned circuit and its scores.

(Search determinism, circuit and certificate, is checked in test_kill_resume.py, where an
uninterrupted search runs twice and a killed-and-resumed one must match it.)
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _train(runs: Path, *extra: str) -> Path:
    sys.path.insert(0, str(REPO))
    try:
        import train as train_cli
    finally:
        sys.path.remove(str(REPO))
    train_cli.main(["fit", "--config", str(REPO / "configs" / "train" / "tiny.yaml"), "--runs_dir", str(runs),
                    "--trainer.enable_progress_bar", "false", *extra])
    return runs / "tiny"


def _without_run_details(circuit: dict) -> dict:
    c = json.loads(json.dumps(circuit))
    c.pop("wall_time_s")
    c.pop("peak_rss_mb")  # the process's high-water mark: run b follows run a in the same process
    c["config"]["train"].pop("runs_dir")
    return c


def test_same_seed_same_gates_circuit_and_scores(tmp_path):
    a, b = _train(tmp_path / "a"), _train(tmp_path / "b")
    assert (a / "gates.json").read_text() == (b / "gates.json").read_text()  # byte-identical
    ca, cb = (json.loads((r / "circuit_learned.json").read_text()) for r in (a, b))
    assert _without_run_details(ca) == _without_run_details(cb)  # heads, scores, bootstrap CIs
    c = _train(tmp_path / "c", "--seed_everything", "1")
    assert (c / "gates.json").read_text() != (a / "gates.json").read_text()  # the seed does matter
