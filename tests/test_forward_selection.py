"""Forward selection by re-linearised attribution: each round adds the head the derivative at the
current circuit ranks first, the recovery it stops on is the scorer's own, and the rank verb
writes the selected set as the warm search's start."""
from __future__ import annotations

import json

import pytest
import torch

from kmshc.rank.attribution import gate_gradients
from kmshc.cli import main as kmshc_main
from kmshc.engine.cost import RowCount
from kmshc.rank.forward_selection import forward_selection
from kmshc.engine.scoring import Scorer
from kmshc.search.gates_file import read_gates
from kmshc.tasks import grammar_task
from kmshc.engine.tiny import tiny_model
from kmshc.types import KmshcError, head_name, heads_to_mask

L, H = 3, 4


@pytest.fixture(scope="module")
def scorer():
    task = grammar_task(n=40, seed=3)
    model, tok = tiny_model("llama", n_layers=L, n_heads=H)
    return Scorer(model, tok, task, ablation="mean", train=task, batch_size=16)


def mask_of(names: tuple[str, ...]) -> torch.Tensor:
    return heads_to_mask(names, L, H)


def recovery(scorer: Scorer, heads: tuple[str, ...]) -> float:
    full, base, s = scorer.outcomes(torch.stack([torch.ones(L, H), torch.zeros(L, H), mask_of(heads)])).margin.mean(1)
    return float((s - base) / (full - base))


def test_each_round_adds_the_head_with_the_largest_derivative_at_the_circuit_so_far(scorer):
    seen = []
    sel = forward_selection(scorer, target=2.0, max_heads=4, on_round=lambda k, r: seen.append((k, r)))  # unreachable: 4 rounds
    assert len(sel.start) == 4 and not sel.reached and len(sel.recovery) == 5 and sel.recovery[0] == 0.0
    assert seen == list(enumerate(sel.recovery))
    for k in range(4):
        grads, _ = gate_gradients(scorer, mask_of(sel.start[:k])[None], RowCount(L))
        g = grads[0].masked_fill(mask_of(sel.start[:k]).bool(), float("-inf"))
        i = int(g.flatten().argmax())
        assert sel.start[k] == head_name(i // H, i % H)
    # the recovery it reports is the scorer's own, set by set
    for k in range(1, 5):
        assert sel.recovery[k] == pytest.approx(recovery(scorer, sel.start[:k]), abs=1e-4)
    torch.testing.assert_close(sel.scores, gate_gradients(scorer, mask_of(sel.start)[None], RowCount(L))[0][0])


def test_selection_stops_at_the_first_set_that_reaches_the_target(scorer):
    long = forward_selection(scorer, target=2.0, max_heads=6)
    target = max(long.recovery[1:4]) - 1e-6  # reached within three rounds
    sel = forward_selection(scorer, target=target, max_heads=6)
    first = next(k for k in range(1, 7) if long.recovery[k] >= target)
    assert sel.reached and sel.start == long.start[:first] and len(sel.recovery) == first + 1
    # cost: one forward for m(M), then one forward and one backward per round
    n = scorer.data.n
    assert sel.cost.forward_example_forwards == n * (first + 2) and sel.cost.backward_example_forwards == n * (first + 1)


def test_several_heads_per_round_and_bad_settings(scorer):
    sel = forward_selection(scorer, target=2.0, per_round=3, max_heads=5)
    assert len(sel.start) == 5 and len(sel.recovery) == 3  # 3 + 2 heads, capped at max_heads
    every = forward_selection(scorer, target=2.0, per_round=5, max_heads=100)  # capped by the L·H heads there are
    assert sorted(every.start) == sorted(head_name(l, h) for l in range(L) for h in range(H))
    with pytest.raises(KmshcError, match="per_round"):
        forward_selection(scorer, per_round=0)


def test_rank_writes_the_selected_set_as_the_start(tmp_path, capsys):
    import contextlib
    import io
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert kmshc_main(["rank", "--method", "forward_selection", "--target", "0.5", "--max_heads", "3",
                           "--model", "tiny-gpt2", "--task", "grammar", "--n", "100", "--runs_dir", str(tmp_path),
                           "--name", "fs"]) == 0
    record = json.loads((tmp_path / "fs" / "gates.json").read_text())
    rule = record["start_rule"]
    assert record["method"] == "forward_selection" and rule["rule"] == "forward_selection" and rule["target"] == 0.5
    _, gates, _ = read_gates(tmp_path / "fs")
    on = {h for h, g in gates.items() if g > 0.5}
    assert 1 <= len(on) == rule["size"] <= 3 and len(rule["recovery"]) == record["steps"]
    assert sorted(rule["order"]) == sorted(on)  # the selected heads in the order they were added
    assert rule["reached"] == (rule["recovery"][-1] >= 0.5)
    assert json.loads(buf.getvalue())["start_size"] == len(on)
    assert capsys.readouterr().err.count("forward selection: ") == record["steps"]  # one progress line a round
