"""The regularisation path at the end of gate training (kmshc.train.path) and the ranking it
writes to gates.json (``order``), which the warm search and the curves follow."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from kmshc.search.gates_file import ranking_scores, read_gates
from kmshc.train.path import PathRecord, level, path_lambda
from kmshc.types import KmshcError

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import train  # noqa: E402  (the entry point at the repo root)


def test_path_lambda_grows_geometrically_from_the_path_start():
    assert path_lambda(5, 10, 0.03, 2.0) == 0.03
    assert path_lambda(10, 10, 0.03, 2.0) == 0.03
    assert path_lambda(13, 10, 0.03, 2.0) == pytest.approx(0.24)


def test_level_lowers_only_the_gates_above_it():
    la = torch.tensor([[5.0, 2.5], [-1.0, 1.0]])
    level(la, 2.0)
    assert la.tolist() == [[2.0, 2.0], [-1.0, 1.0]]


def test_path_order_ranks_by_last_open_step_then_log_alpha():
    rec = PathRecord(1, 5)
    rec.update(torch.tensor([[True, True, True, True, False]]), 0)
    rec.update(torch.tensor([[True, False, True, False, False]]), 1)
    rec.update(torch.tensor([[False, False, True, False, False]]), 2)
    la = torch.tensor([[0.0, 3.0, -1.0, 4.0, 9.0]])
    # head 2 open to the end; 0 closed after step 1; 1 and 3 after step 0 (3 has the larger log_alpha);
    # 4 never open on the path, last despite the largest log_alpha
    assert rec.order(la) == [2, 0, 3, 1, 4]


def test_heads_never_open_on_the_path_keep_the_order_they_had_when_it_began():
    """The rising penalty crowds the closed heads' log_alpha together; their order before it counts."""
    rec = PathRecord(1, 4)
    rec.begin(torch.tensor([[3.0, -1.0, -2.0, -5.0]]))
    rec.update(torch.tensor([[True, False, False, False]]), 0)
    crowded = torch.tensor([[3.0, -9.0, -8.9, -8.8]])  # at the end: the reverse of their start order
    assert rec.order(crowded) == [0, 1, 2, 3]


def record(order=None) -> dict:
    heads = {"L0H0": {"log_alpha": 1.0, "gate": 1.0}, "L0H1": {"log_alpha": 3.0, "gate": 1.0},
             "L1H0": {"log_alpha": 2.0, "gate": 0.0}, "L1H1": {"log_alpha": -1.0, "gate": 0.0}}
    return {"heads": heads, **({"order": order} if order is not None else {})}


def test_ranking_scores_put_the_order_first_and_the_rest_by_log_alpha():
    by_la = ranking_scores(record())
    assert sorted(by_la, key=by_la.get, reverse=True) == ["L0H1", "L1H0", "L0H0", "L1H1"]
    ranked = ranking_scores(record(["L1H1", "L0H0"]))
    assert sorted(ranked, key=ranked.get, reverse=True) == ["L1H1", "L0H0", "L0H1", "L1H0"]
    with pytest.raises(KmshcError, match="gates.json: field 'order'"):
        ranking_scores(record(["L9H9"]))


def fit(tmp: Path, *extra: str, name: str):
    return train.main(["fit", "--config", str(ROOT / "configs" / "train" / "tiny.yaml"), "--runs_dir", str(tmp),
                       "--name", name, "--trainer.enable_progress_bar", "false", *extra])


def test_a_path_closes_gates_and_writes_the_order_the_search_reads(tmp_path):
    common = ("--trainer.max_steps", "40", "--model.lr", "0.3")
    fit(tmp_path, *common, name="plain")
    fit(tmp_path, *common, "--model.path_steps", "25", "--model.path_growth", "1.4", name="path")
    plain = json.loads((tmp_path / "plain" / "gates.json").read_text())
    path = json.loads((tmp_path / "path" / "gates.json").read_text())
    assert "order" not in plain and sorted(path["order"]) == sorted(path["heads"])
    open_at_end = {h for h, v in path["heads"].items() if v["gate"] > path["gate_threshold"]}
    n_open = lambda d: sum(v["gate"] > d["gate_threshold"] for v in d["heads"].values())  # noqa: E731
    assert n_open(path) < n_open(plain)  # lambda grew 1.4^25-fold: gates closed
    assert set(path["order"][:len(open_at_end)]) == open_at_end  # the heads still open rank first
    _, _, ranks = read_gates(tmp_path / "path")
    assert sorted(ranks, key=ranks.get, reverse=True) == path["order"]


def test_a_path_needs_the_l0_penalty():
    from kmshc.experiment import Experiment
    from kmshc.train.module import GateModule
    with pytest.raises(KmshcError, match="model.path_steps: a path needs sparsity 'l0'"):
        GateModule(Experiment(model="tiny-gpt2", task="grammar", n=20), sparsity="lagrangian", target=3, path_steps=5)
