"""gates.json has one writer and one reader (kmshc.search.gates_file): a file round-trips, a
version 1 file (the gate threshold named ``tau``) reads in the current version, and a newer
version than this kmshc knows is refused with the path in the error."""
from __future__ import annotations

import json

import pytest
import torch

from kmshc.experiment import Experiment
from kmshc.search.gates_file import NAME, VERSION, gates_record, head_values, load_gates, read_gates, write_gates
from kmshc.search.settings import DEFAULTS
from kmshc.types import KmshcError

EXP = Experiment(model="tiny-gpt2", task="grammar", n=20)


def record():
    log_alpha = torch.tensor([[2.0, -1.0], [0.5, -3.0]])
    return gates_record(EXP, log_alpha, torch.sigmoid(log_alpha), gate_threshold=DEFAULTS.gate_threshold, cost={})


def test_a_written_file_reads_back(tmp_path):
    write_gates(tmp_path, record())
    exp, gates, ranks = read_gates(tmp_path)
    assert exp == EXP and ranks["L0H0"] == 2.0 and gates["L1H1"] == pytest.approx(torch.sigmoid(torch.tensor(-3.0)))
    assert head_values(tmp_path, "log_alpha") == ranks
    assert load_gates(tmp_path)[0]["version"] == VERSION


def test_a_version_1_file_names_the_gate_threshold_tau(tmp_path):
    old = {k: v for k, v in record().items() if k not in ("version", "gate_threshold")} | {"tau": 0.3}
    (tmp_path / NAME).write_text(json.dumps(old))
    d, _ = load_gates(tmp_path)
    assert d["gate_threshold"] == 0.3 and "tau" not in d
    assert read_gates(tmp_path)[0] == EXP


def test_a_newer_version_and_a_missing_file_are_named(tmp_path):
    assert load_gates(tmp_path) is None and head_values(tmp_path, "gate") is None
    with pytest.raises(KmshcError, match="not found; warm mode"):
        read_gates(tmp_path)
    (tmp_path / NAME).write_text(json.dumps({**record(), "version": VERSION + 1}))
    with pytest.raises(KmshcError, match=f"{NAME}: version {VERSION + 1}"):
        load_gates(tmp_path)
