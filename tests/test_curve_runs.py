"""``kmshc compare --curves``: rankings from run files, scored on a tiny model, in the report."""
from __future__ import annotations

import json

import pytest

from kmshc.cli import main
from kmshc.compare import load_entries
from kmshc.compare.curve_runs import entry_ranking
from kmshc.compare.curves import faithfulness_curve
from kmshc.experiment import Experiment
from kmshc.types import Circuit

EXP = {"model": "tiny-gpt2", "task": "grammar", "n": 40, "seed": 0, "ablation": "mean"}
LOG_ALPHA = {"L0H0": 0.5, "L0H1": -2.0, "L0H2": 3.0, "L0H3": -1.0, "L1H0": 1.0, "L1H1": 2.0, "L1H2": -3.0, "L1H3": 0.0}


@pytest.fixture()
def run(tmp_path):
    r = tmp_path / "r"
    r.mkdir()
    (r / "gates.json").write_text(json.dumps({"heads": {h: {"log_alpha": a, "gate": 0.5} for h, a in LOG_ALPHA.items()}}))
    for method, heads in (("learned", ("L0H2", "L1H1")), ("searched", ("L1H3", "L0H1"))):
        Circuit(model="tiny-gpt2", task="grammar", heads=heads, n_heads_total=8, seed=0,
                config={"experiment": EXP}, extra={"method": method}).save(r / f"circuit_{method}.json")
    return r


def test_rankings_follow_log_alpha_and_put_a_searched_circuit_first(run):
    entries = {e.method: e for e in load_entries([run])}
    assert entry_ranking(entries["learned"], 2, 4) == ["L0H2", "L1H1", "L1H0", "L0H0", "L1H3", "L0H3", "L0H1", "L1H2"]
    # The searched heads first (by log_alpha: L1H3 = 0.0 before L0H1 = -2.0), then the rest by log_alpha.
    assert entry_ranking(entries["searched"], 2, 4) == ["L1H3", "L0H1", "L0H2", "L1H1", "L1H0", "L0H0", "L0H3", "L1H2"]


def test_compare_curves_match_a_direct_computation_and_reach_the_report(run, tmp_path, capsys):
    out = tmp_path / "cmp"
    assert main(["compare", str(run), "--curves", "--out", str(out)]) == 0
    result = json.loads((out / "compare.json").read_text())
    got = {c["label"]: c for c in result["faithfulness"]["curves"]["margin"]}
    scorer = Experiment(**EXP).scorer_for("test")
    want = faithfulness_curve(entry_ranking(load_entries([run])[0], 2, 4),
                              lambda m: scorer.outcomes(m).margin.mean(1), 2, 4)
    c = got["r:learned"]
    assert c["ks"] == list(want.ks) and c["ks"][0] == 0 and c["ks"][-1] == 8
    assert c["cpr"] == pytest.approx(want.cpr, abs=1e-5) and c["cmd"] == pytest.approx(want.cmd, abs=1e-5)
    assert c["faithfulness"][0] == 0.0 and c["faithfulness"][-1] == pytest.approx(1.0)
    assert got["r:searched"]["cpr"] != pytest.approx(c["cpr"])  # a different ranking, a different curve
    report = (out / "report.md").read_text()
    assert "## Faithfulness curves (MIB-style)" in report and "| r:learned |" in report
    assert (out / "faithfulness_grammar_margin.png").read_bytes()[:4] == b"\x89PNG"
    assert "faithfulness_grammar_margin.png" in report


def test_a_second_compare_reuses_the_curve_scores_and_a_changed_ranking_is_rescored(run, tmp_path, monkeypatch):
    out = tmp_path / "cmp"
    assert main(["compare", str(run), "--curves", "--out", str(out)]) == 0
    first = json.loads((out / "compare.json").read_text())["faithfulness"]["curves"]
    cache = json.loads((out / "curve_scores.json").read_text())
    assert sorted(v["label"] for v in cache.values()) == ["r:learned", "r:searched"]

    built = []
    real = Experiment.scorer_for
    monkeypatch.setattr(Experiment, "scorer_for", lambda self, split: built.append(split) or real(self, split))
    assert main(["compare", str(run), "--curves", "--out", str(out)]) == 0
    assert built == []  # every ranking came from the cache: no scorer, no forward pass
    assert json.loads((out / "compare.json").read_text())["faithfulness"]["curves"] == first

    # A new log_alpha order changes both rankings: both are scored again, and the cache grows.
    (run / "gates.json").write_text(json.dumps({"heads": {h: {"log_alpha": -a, "gate": 0.5}
                                                          for h, a in LOG_ALPHA.items()}}))
    assert main(["compare", str(run), "--curves", "--out", str(out)]) == 0
    assert built == ["test"]  # one experiment, one scorer for its two new rankings
    assert len(json.loads((out / "curve_scores.json").read_text())) == 4
    learned = {c["label"]: c for c in json.loads((out / "compare.json").read_text())["faithfulness"]["curves"]["margin"]}
    assert learned["r:learned"]["cpr"] != pytest.approx({c["label"]: c for c in first["margin"]}["r:learned"]["cpr"])

    assert main(["compare", str(run), "--curves", "--out", str(out), "--no_curve_cache"]) == 0
    assert built == ["test", "test"]  # asked not to reuse: scored again


@pytest.mark.parametrize("text", ["{not json", "[1, 2]"])
def test_a_corrupt_curve_cache_is_named_in_the_error(run, tmp_path, capsys, text):
    out = tmp_path / "cmp"
    out.mkdir()
    (out / "curve_scores.json").write_text(text)
    assert main(["compare", str(run), "--curves", "--out", str(out)]) != 0
    assert "curve_scores.json" in capsys.readouterr().err
    assert (out / "curve_scores.json").read_text() == text  # left as it was, not overwritten


def _record_shape(run, n_layers, n_heads):
    gates = json.loads((run / "gates.json").read_text())
    (run / "gates.json").write_text(json.dumps({**gates, "n_layers": n_layers, "n_heads": n_heads}))


def test_a_compare_whose_curves_are_all_cached_loads_no_model(run, tmp_path, monkeypatch):
    _record_shape(run, 2, 4)  # as train.py and kmshc rank write it
    out = tmp_path / "cmp"
    assert main(["compare", str(run), "--curves", "--out", str(out)]) == 0
    first = json.loads((out / "compare.json").read_text())["faithfulness"]["curves"]

    def no_model(self):
        raise AssertionError("the model was loaded")
    monkeypatch.setattr(Experiment, "loaded", property(no_model))
    assert main(["compare", str(run), "--curves", "--out", str(out)]) == 0
    assert json.loads((out / "compare.json").read_text())["faithfulness"]["curves"] == first


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", '{"heads": [1]}'])
def test_a_malformed_gates_file_is_named_in_the_error(run, tmp_path, capsys, text):
    (run / "gates.json").write_text(text)
    assert main(["compare", str(run), "--curves", "--out", str(tmp_path / "cmp")]) != 0
    assert "gates.json" in capsys.readouterr().err


def test_a_shape_that_is_not_the_models_is_an_error_naming_the_gates_file(run, tmp_path, capsys):
    _record_shape(run, 3, 4)  # tiny-gpt2 has 2 layers of 4 heads
    assert main(["compare", str(run), "--curves", "--out", str(tmp_path / "cmp")]) != 0
    err = capsys.readouterr().err
    assert "gates.json" in err and "3 layers x 4 heads" in err and "2 x 4" in err
