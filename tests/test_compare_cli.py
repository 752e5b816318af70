"""``kmshc compare`` end to end: files written, report links, rescoring on a tiny model, W&B offline."""
from __future__ import annotations

import json

import pytest
import torch

from kmshc.cli import main
from kmshc.compare import load_entries
from kmshc.compare.tables import percentile_ci
from kmshc.stats import bootstrap_means
from kmshc.types import Circuit

from test_compare import runs  # noqa: F401  (the hand-made run folder fixture)


def test_cli_writes_tables_plots_and_report(runs, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "cmp"
    assert main(["compare", str(runs), "--out", str(out), "--title", "Hand-made"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["n_circuits"] == 12 and summary["shape"] == [4, 3]
    assert summary["summary"]["learned"]["A"]["seed_stability"] == pytest.approx(5 / 12)
    result = json.loads((out / "compare.json").read_text())
    assert len(result["pairs"]) == 12 * 11 // 2
    assert result["analysis"]["methods"]["learned"]["classes"]["B"]["super"] == ["L3H0"]
    report = (out / "report.md").read_text()
    assert report.startswith("# Hand-made")
    links = [line.split("](")[1][:-1] for line in report.splitlines() if line.startswith("![")]
    assert "layer_distribution.png" in links and "overlap_learned_strong.png" in links
    assert "gates_A_s0_warm.png" in links
    for link in links:  # every embedded image exists and is a PNG
        assert (out / link).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    csv_lines = (out / "circuits.csv").read_text().splitlines()
    assert csv_lines[0].startswith("label,task,method,seed,size") and len(csv_lines) == 13


def test_cli_user_errors_exit_2(tmp_path, capsys):
    assert main(["compare", str(tmp_path / "nope")]) == 2
    assert "no such run directory" in capsys.readouterr().err
    assert main(["compare", str(tmp_path)]) == 2
    assert "no circuit_*.json" in capsys.readouterr().err
    (tmp_path / "c.json").write_text(json.dumps({"model": "m", "task": "t", "heads": ["L0H0"],
                                                 "n_heads_total": 4}))
    assert main(["compare", str(tmp_path / "c.json"), "--shape", "30by9"]) == 2
    assert "--shape" in capsys.readouterr().err


def test_paired_bootstrap():
    x = torch.tensor([[1, 0, 1, 1, 0, 1, 1, 1], [1, 0, 1, 1, 0, 1, 1, 1], [0, 0, 0, 0, 0, 0, 0, 0.]])
    b = bootstrap_means(x, n_boot=200, seed=3)
    assert b.shape == (3, 200)
    assert torch.equal(b[0], b[1])  # same resamples for every row: identical rows never differ
    assert percentile_ci(b[0] - b[1]) == [0.0, 0.0] and percentile_ci(b[2]) == [0.0, 0.0]
    lo, hi = percentile_ci(b[0])
    assert lo < 0.75 < hi and torch.equal(b, bootstrap_means(x, n_boot=200, seed=3))


def _tiny_circuit(path, heads, seed=0):
    exp = {"model": "tiny-gpt2", "task": "grammar", "n": 40, "seed": seed, "ablation": "zero"}
    Circuit(model="tiny-gpt2", task="grammar", heads=heads, n_heads_total=8, seed=seed,
            config={"experiment": exp}).save(path)


def test_rescore_matches_the_experiment_scorer(tmp_path, capsys):
    from kmshc.experiment import Experiment
    run = tmp_path / "r"
    run.mkdir()
    _tiny_circuit(run / "circuit_learned.json", ("L0H0", "L0H1", "L1H2"))
    _tiny_circuit(run / "circuit_searched.json", ("L1H2",))
    out = tmp_path / "cmp"
    assert main(["compare", str(run), "--rescore", "--out", str(out)]) == 0
    result = json.loads((out / "compare.json").read_text())
    exp = Experiment(model="tiny-gpt2", task="grammar", n=40, seed=0, ablation="zero")
    sc = exp.scorer_for("test")
    rows = {r["label"]: r for r in result["circuits"]}
    for e in load_entries([run]):
        r = rows[e.label]
        assert r["rescored_n"] == sc.n
        assert r["rescored_accuracy"] == pytest.approx(sc(e.circuit.mask(*exp.shape)), abs=1e-6)
        assert r["rescored_ci"][0] <= r["rescored_accuracy"] <= r["rescored_ci"][1]
    assert rows["r:learned"]["rescored_full_accuracy"] == pytest.approx(sc(torch.ones(exp.shape)), abs=1e-6)
    diff = result["pairs"][0]["rescored_diff"]
    assert diff["diff"] == pytest.approx(rows["r:learned"]["rescored_accuracy"] - rows["r:searched"]["rescored_accuracy"])
    assert diff["ci"][0] <= diff["diff"] <= diff["ci"][1]
    assert "rescored_accuracy" in (out / "report.md").read_text()


def test_wandb_offline_logs_tables_and_images(runs, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "cmp"
    assert main(["compare", str(runs), "--out", str(out), "--wandb"]) == 0
    run_files = list((out / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(run_files) == 1 and run_files[0].stat().st_size > 0
    media = list((out / "wandb").glob("offline-run-*/files/media/images/plots/*.png"))
    assert any("layer_distribution" in p.name for p in media)
    tables = list((out / "wandb").glob("offline-run-*/files/media/table/*.json"))
    assert {p.name.split("_")[0] for p in tables} >= {"circuits", "pairs", "head"}
