"""``kmshc report``: the gathered data against oracles, the page's structure and size, and the verb."""
from __future__ import annotations

import json
import os
import re
import shlex
from pathlib import Path

import pytest
import torch

from kmshc.types import KmshcError
from kmshc.view.gather import certificate_view, head_grid, intervals, read_run
from kmshc.view.trace import key_size, steps_of
from view_helpers import CIRCUIT, SECTION_IDS, tiny_run, tiny_search



@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return tiny_run(tmp_path_factory.mktemp("view"))


@pytest.fixture(scope="module")
def page(run) -> str:
    from kmshc.view import report
    return report(run).read_text(encoding="utf-8")


def test_the_grid_has_one_cell_per_head_and_outlines_exactly_the_circuit():
    grid = head_grid((3, 5), ["L2H4", "L0H1"], gates={"L0H1": 0.9}, attribution={"L1H1": -2.0})
    assert len(grid.cells) == 15 and [c.name for c in grid.cells][:2] == ["L0H0", "L0H1"]
    assert {c.name for c in grid.cells if c.in_circuit} == {"L0H1", "L2H4"}
    assert grid.cells[1].gate == 0.9 and grid.cells[0].gate is None and grid.cells[6].attribution == -2.0
    with pytest.raises(KmshcError, match="L3H0"):
        head_grid((3, 5), ["L3H0"])


def test_rendered_grid_cells_and_outlines(run, page):
    cells = re.findall(r'<rect class="cell( member)?" data-head="(L\d+H\d+)"', page)
    assert len(cells) == 2 * 4 and len({h for _, h in cells}) == 8
    assert sorted(h for m, h in cells if m) == CIRCUIT
    for sid in SECTION_IDS:
        assert f'<section id="{sid}">' in page, sid
    assert "http://" not in page and "https://" not in page  # nothing to fetch


def test_old_certificates_get_a_verdict_and_one_round(run):
    raw = json.loads((run / "circuit_searched.json").read_text())["certificate"]
    old = {k: v for k, v in raw.items() if k not in ("verdict", "rounds")}
    view = certificate_view(old)
    assert view.verdict == ("verified" if raw["verified"] else "undecided")
    assert [(r.n, r.alpha) for r in view.rounds] == [(raw["n"], pytest.approx(1 - raw["confidence"]))]
    assert view.reason == (raw["reasons"][0] if raw["reasons"] else "every check passes")
    new = certificate_view({**old, "verdict": "refuted", "rounds": [
        {"n": 8, "new": 8, "alpha": 0.01, "source": "test", "open": ["r(C)"]},
        {"n": 12, "new": 4, "alpha": 0.05, "source": "fresh", "open": []}]})
    assert new.verdict == "refuted" and [(r.n, r.new, r.source) for r in new.rounds] == [(8, 8, "test"), (12, 4, "fresh")]
    verified = certificate_view({**old, "verified": True, "reasons": []})
    assert verified.verdict == "verified" and verified.reason == "every check passes"


def test_intervals_list_the_circuit_each_removal_and_the_knockout(run):
    view = certificate_view(json.loads((run / "circuit_searched.json").read_text())["certificate"])
    rows = intervals(view)
    assert [r.label for r in rows] == ["C", *(f"C \\ {h}" for h in CIRCUIT), "M \\ C"]
    assert rows[0].recovery == view.circuit.recovery


def test_trace_sizes_follow_the_keys_and_the_decisions():
    assert key_size("8:0") == 0 and key_size("8:ff") == 8 and key_size("270:5") == 2
    steps = steps_of([{"event": "threshold", "start": 5, "example_forwards": 10},
                      {"event": "drop_head", "head": 3, "example_forwards": 25},
                      {"event": "keep_head", "head": 1, "example_forwards": 30},
                      {"event": "drop_block", "heads": [0, 2], "example_forwards": 50}])
    assert [s.size for s in steps] == [5, 4, 4, 2] and [s.forwards for s in steps] == [10, 15, 5, 20]


def test_the_search_trace_reads_the_state_file(run, page):
    state = json.loads((run / "search_state.json").read_text())
    points = page.split('id="trace"')[1].count("<circle")
    assert points >= len(state["log"]) > 0  # one dot per scored set


def test_patterns_are_causal_attention_rows_over_the_shown_tokens(run):
    from kmshc.experiment import Experiment
    from kmshc.view.probe import probe_heads
    circ = read_run(run).circuit
    exp = Experiment.from_dict(circ.config["experiment"])
    probe = probe_heads(*exp.loaded, exp.splits["test"], CIRCUIT, n_items=4)
    assert len(probe.examples) == 3 and len(probe.scores["previous_token"]) == 2
    for ex in probe.examples:
        assert [h for h, _ in ex.patterns] == CIRCUIT
        for _, p in ex.patterns:
            t = torch.tensor(p)
            assert t.shape == (len(ex.tokens), len(ex.tokens))
            assert torch.allclose(t.sum(1), torch.ones(len(ex.tokens)), atol=5e-3)
            assert float(t.triu(1).abs().max()) == 0.0  # no attention to later tokens


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_direct_effect_equals_removing_the_heads_write_before_the_final_norm(arch):
    """Oracle: rerun the model with head h's write (its out-projection of h alone, bias excluded)
    subtracted from the final norm's input at the read position; the logit difference drops by
    exactly the direct effect."""
    from kmshc.engine.architectures import out_projections
    from kmshc.engine.tiny import tiny_model
    from kmshc.view.probe import direct_effects, final_norm, head_writes
    model, _ = tiny_model(arch)
    ids = torch.randint(5, 200, (3, 7))
    good_bad = torch.tensor([[11, 12], [13, 14], [15, 16]])
    store, x_in = [], []
    proj = out_projections(model)[1]
    h1 = proj.register_forward_pre_hook(lambda m, a: store.append(a[0][:, -1].detach().clone()))
    h2 = final_norm(model).register_forward_pre_hook(lambda m, a: x_in.append(a[0][:, -1].detach().clone()))
    with torch.no_grad():
        logits = model(ids).logits[:, -1]
    h1.remove(), h2.remove()
    n_heads = model.config.num_attention_heads
    z = [torch.zeros(3, n_heads, store[0].shape[-1] // n_heads), store[0].view(3, n_heads, -1)]
    writes = head_writes(model, z)
    got = direct_effects(model, final_norm(model), x_in[0], writes, good_bad)[1, 2]
    hook = final_norm(model).register_forward_pre_hook(
        lambda m, a: (torch.cat([a[0][:, :-1], (a[0][:, -1] - writes[1, 2])[:, None]], 1),))
    with torch.no_grad():
        without = model(ids).logits[:, -1]
    hook.remove()
    diff = lambda lg: lg.gather(1, good_bad[:, :1])[:, 0] - lg.gather(1, good_bad[:, 1:])[:, 0]  # noqa: E731
    assert float(got) == pytest.approx(float((diff(logits) - diff(without)).mean()), abs=1e-4)
    assert float(got) != 0.0


def test_the_curve_masks_share_the_empty_and_full_circuits():
    from kmshc.view.faith import unique_masks
    names = [f"L{l}H{h}" for l in range(2) for h in range(2)]
    masks, index = unique_masks([names, names[::-1]], [0, 1, 2, 4], (2, 2))
    assert masks.shape == (2 * 2 + 2, 2, 2) and index.shape == (2, 4)
    assert index[0, 0] == index[1, 0] and index[0, -1] == index[1, -1]
    assert masks[index[1, 1]].flatten().tolist() == [0, 0, 0, 1]


def test_bad_folders_are_user_errors_naming_the_path(tmp_path, capsys):
    from kmshc.cli import main
    with pytest.raises(KmshcError, match=re.escape(str(tmp_path / "nope"))):
        read_run(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "empty") in err and "no circuit file" in err
    with pytest.raises(SystemExit):
        main(["report"])
    assert "RUN_DIR" in capsys.readouterr().err


def test_the_verb_prints_the_path_and_the_api_is_exported(run, capsys):
    import kmshc
    from kmshc.cli import main
    assert main(["report", str(run), "--no_model"]) == 0
    out = capsys.readouterr().out.strip()
    assert Path(out) == run / "report.html" and Path(out).is_file()
    assert kmshc.report.__module__ == "kmshc.view.write" and "report" in kmshc.__all__
    assert "left out (--no_model)" in Path(out).read_text()


def test_the_reproduce_command_reruns_the_search(tmp_path):
    from kmshc.cli import main
    from kmshc.view.gather import reproduce
    run = tiny_search(tmp_path / "r")
    cmd = shlex.split(reproduce(read_run(run))[-1])
    assert cmd[:2] == ["kmshc", "search"]
    cmd[cmd.index("--out") + 1] = str(tmp_path / "again")
    assert main(cmd[1:] + ["--progress", "false"]) == 0
    first, again = (json.loads((d / "search_state.json").read_text()) for d in (run, tmp_path / "again"))
    assert again["log"] == first["log"] and again["trace"] == first["trace"]


def test_a_270_head_report_stays_under_5_mb():
    """Everything that grows with the model at its largest: 30 x 9 heads with every score, 24 pattern
    heads on 3 items of 60 tokens, 3000 scored sets."""
    from kmshc.types import Circuit
    from kmshc.view.gather import RunFiles, summarise
    from kmshc.view.page import render
    from kmshc.view.probe import Example, HeadProbe
    from kmshc.view.trace import search_trace
    heads = [f"L{l}H{h}" for l in range(30) for h in range(9)]
    table = [[0.123456] * 9 for _ in range(30)]
    pattern = tuple(tuple([0.123] * 60) for _ in range(60))
    examples = tuple(Example(tuple(["tok"] * 60), 59, "x", tuple((h, pattern) for h in heads[:24])) for _ in range(3))
    probe = HeadProbe({k: table for k in ("previous_token", "duplicate_token", "induction", "answer", "direct_effect")},
                      examples, 16)
    circ = Circuit(model="m", task="t", heads=tuple(heads[:40]), n_heads_total=270)
    state = {"log": [["270:" + "f" * 68, 0.5]] * 3000,
             "trace": [{"event": "drop_head", "example_forwards": i} for i in range(300)]}
    files = RunFiles(Path("r"), Path("r/c.json"), circ, None, state)
    grid = head_grid((30, 9), circ.heads, gates={h: 0.5 for h in heads}, scores=probe.scores)
    html = render("t", summarise(files, None), grid, None, None, probe, search_trace(state, circ), {})
    assert html.count('class="cell') == 270
    assert len(html.encode()) < 5_000_000, len(html.encode())


def test_redundancy_and_compare_folders_link_a_report_per_run(run, tmp_path):
    from kmshc.view import report
    from kmshc.view.index import chain
    est = lambda r: {"value": r, "accuracy": r, "recovery": r, "lower": r - 0.1, "upper": r + 0.1}  # noqa: E731
    red = tmp_path / "red"
    red.mkdir()
    d = {"stop": "no_sufficient_set", "why": "nothing left",
         "circuits": [{"name": "C1", "heads": CIRCUIT, "size": 2, "verified": False,
                       "path": str(run / "circuit_searched.json")}],
         "analysis": {"epsilon": 0.9, "tau": 0.05, "knockouts": [{"label": "M", "size": 8, "estimate": est(1.0)},
                                                                  {"label": "M \\ (C1)", "size": 6,
                                                                   "estimate": est(0.2), "verdict": "collapse"}]}}
    (red / "redundancy.json").write_text(json.dumps(d))
    links, knocks = chain(red, d)
    assert links[0].run_dir == run and [(k.k, k.recovery, k.verdict) for k in knocks] == [(0, 1.0, None),
                                                                                          (1, 0.2, "collapse")]
    html = report(red, model=False).read_text()
    assert f'href="{Path(os.path.relpath(run / "report.html", red)).as_posix()}"' in html and "collapse" in html
    cmp = tmp_path / "cmp"
    cmp.mkdir()
    (cmp / "compare.json").write_text(json.dumps({"circuits": [
        {"label": "t:warm", "task": "grammar", "method": "warm", "size": 2, "path": str(run / "circuit_searched.json")},
        {"label": "gone", "task": "grammar", "method": "warm", "size": 0, "path": str(tmp_path / "gone" / "c.json")}]}))
    html = report(cmp, model=False).read_text()
    assert html.count(">report</a>") == 1 and "(run folder not found)" in html


def test_wandb_logs_the_page_offline(run, page, tmp_path, monkeypatch):
    import shutil
    from kmshc.view.write import log_to_wandb
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    copy = tmp_path / "report.html"
    shutil.copy(run / "report.html", copy)
    shutil.copy(run / "circuit_searched.json", tmp_path / "circuit_searched.json")
    log_to_wandb(copy)
    logged = list((tmp_path / "wandb").glob("offline-run-*/files/media/html/*.html"))
    assert len(logged) == 1 and 'id="summary"' in logged[0].read_text()
    from kmshc.view.write import certificate_summary
    circuit = json.loads((run / "circuit_searched.json").read_text())
    summary = certificate_summary(tmp_path)
    assert summary["verdict"] == circuit["certificate"]["verdict"] in ("verified", "refuted", "undecided")
    assert certificate_summary(tmp_path / "wandb") == {}  # no circuit there
    # an offline run keeps its summary in the run's log: the verdict key is in it. wandb-core
    # writes that file after finish() returns; teardown waits for it (the CLI's exit does the same)
    import wandb
    wandb.teardown()
    assert b"verdict" in next((tmp_path / "wandb").glob("offline-run-*/run-*.wandb")).read_bytes()
