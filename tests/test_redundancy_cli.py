"""search.py --exclude and kmshc redundancy on the tiny random model."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kmshc.entry.redundancy import parse
from kmshc.redundancy.run import redundancy
from kmshc.search.common import NoSufficientSet
from kmshc.entry.search import repeatable
from kmshc.types import KmshcError, read_circuit
from test_search_cli import ENTRY, REPO, TINY, reachable  # noqa: F401  (a fixture)


def test_exclude_repeats_like_a_flag():
    assert repeatable(["--exclude", "a.json", "--exclude=b.json", "--epsilon", "0.8"]) == \
        ["--exclude+", "a.json", "--exclude+=b.json", "--epsilon", "0.8"]
    assert repeatable(["--exclude", "[a.json, b.json]"]) == ["--exclude", "[a.json, b.json]"]
    assert ENTRY.parse(TINY + ["--exclude", "a.json", "--exclude", "b.json"]).exclude == ["a.json", "b.json"]


def test_search_outside_an_excluded_circuit(tmp_path, reachable):  # noqa: F811
    first = ENTRY.main(TINY + reachable + ["--runs_dir", str(tmp_path), "--name", "c1"])
    c1 = tmp_path / "c1" / "circuit_searched.json"
    try:
        second = ENTRY.main(TINY + reachable + ["--runs_dir", str(tmp_path), "--name", "c2", "--exclude", str(c1)])
    except NoSufficientSet as e:  # the rest of the tiny model cannot reach U: a valid answer, with its reason
        assert e.score < e.threshold and "outside the excluded circuits" in str(e)
        state = json.loads((tmp_path / "c2" / "search_state.json").read_text())
        assert state["fingerprint"]["excluded_heads"] == first["heads"]
        return
    circ = read_circuit(second["circuit"])
    assert not set(circ.heads) & set(first["heads"]) and circ.config["excluded_heads"] == first["heads"]


def test_exclude_needs_keep_semantics_and_the_same_model(tmp_path, reachable):  # noqa: F811
    with pytest.raises(KmshcError, match="keep semantics"):
        ENTRY.main(TINY + ["--semantics", "paper", "--exclude", "x.json", "--runs_dir", str(tmp_path)])
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"model": "tiny-llama", "task": "grammar", "heads": ["L0H0"], "n_heads_total": 8}))
    with pytest.raises(KmshcError, match="exclude: a circuit of tiny-llama"):
        ENTRY.main(TINY + reachable + ["--runs_dir", str(tmp_path), "--name", "e", "--exclude", str(other)])


def test_redundancy_in_process_and_reused_on_rerun(tmp_path, reachable):  # noqa: F811
    cfg, extra = parse(TINY + reachable + ["--out", str(tmp_path / "r"), "--max_circuits", "3"])
    res = redundancy(cfg, **extra)
    assert res.circuits and res.stop in ("no_sufficient_set", "max_circuits")
    heads = [set(f.heads) for f in res.circuits]
    assert all(not (a & b) for i, a in enumerate(heads) for b in heads[i + 1:])
    d = json.loads((tmp_path / "r" / "redundancy.json").read_text())
    assert [c["heads"] for c in d["circuits"]] == [list(f.heads) for f in res.circuits]
    assert len(d["analysis"]["knockouts"]) == len(res.circuits) + 1 and (tmp_path / "r" / "knockout.png").exists()
    c1 = tmp_path / "r" / "C1" / "circuit_searched.json"
    before = c1.stat().st_mtime_ns
    again = redundancy(cfg, **extra)
    assert c1.stat().st_mtime_ns == before and [f.heads for f in again.circuits] == [f.heads for f in res.circuits]
    assert again.stop == res.stop


@pytest.mark.slow
def test_kmshc_redundancy_command_line(tmp_path, reachable):  # noqa: F811
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "kmshc", "redundancy", *TINY, *reachable, "--out", str(tmp_path / "r"),
           "--max_circuits", "2"]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    out = json.loads(p.stdout)
    assert out["circuits"] and Path(out["report"]).read_text().startswith("# Redundant circuits")


def test_kmshc_redundancy_without_out_is_a_usage_error(capsys):
    """In-process (the exit path of the real program is covered above): a missing required flag
    exits 2 naming it."""
    from kmshc.cli import main as kmshc_main
    try:
        rc = kmshc_main(["redundancy", "--config", str(REPO / "configs/search/tiny.yaml")])
    except SystemExit as e:  # the parser's own error exit
        rc = e.code
    assert rc == 2 and "--out" in capsys.readouterr().err


def test_redundancy_warm_reports_the_learned_overlap(tmp_path, reachable):  # noqa: F811
    from test_search_cli import _train_run
    run = _train_run(tmp_path, {f"L{l}H{h}": {"log_alpha": 0.0, "gate": g}
                                for l in range(2) for h, g in enumerate([0.9, 0.7, 0.2, 0.6])})
    cfg, extra = parse(TINY + reachable + ["--mode", "warm", "--from_run", str(run), "--out", str(tmp_path / "w")])
    res = redundancy(cfg, **extra)
    learned = {"L0H0", "L0H1", "L0H3", "L1H0", "L1H1", "L1H3"}
    assert set(res.learned) == learned and not (run / "circuit_searched.json").exists()  # the train run is untouched
    d = json.loads((tmp_path / "w" / "redundancy.json").read_text())
    assert [c["learned_overlap"] for c in d["circuits"]] == [len(learned & set(f.heads)) for f in res.circuits]
