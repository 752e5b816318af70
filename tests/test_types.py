"""kmshc.types: head names, masks, circuit JSON round trip and atomic writes."""
from __future__ import annotations

import json
import os

import pytest
import torch

from kmshc.types import (Circuit, Head, KmshcError, atomic_write_json, atomic_write_text, heads_to_mask,
                         mask_to_heads, parse_head, read_circuit)


def test_parse_head_and_range_checks():
    assert parse_head("L3H5") == Head(3, 5) and Head(3, 5).name == "L3H5"
    assert parse_head(" L0H0 ") == Head(0, 0)
    for bad in ("3.5", "l3h5", "L3", "H5L3", "L-1H2", ""):
        with pytest.raises(KmshcError, match="expected a head name"):
            parse_head(bad)
    with pytest.raises(KmshcError, match="30 layers"):
        parse_head("L30H0", n_layers=30, n_heads=9)
    with pytest.raises(KmshcError, match="9 heads"):
        parse_head("L2H9", n_layers=30, n_heads=9)


def test_mask_round_trip_is_sorted():
    mask = heads_to_mask(["L1H2", Head(0, 3), "L0H0"], 2, 4)
    assert mask.shape == (2, 4) and mask.sum() == 3 and mask[1, 2] == 1 and mask[0, 3] == 1
    assert [h.name for h in mask_to_heads(mask)] == ["L0H0", "L0H3", "L1H2"]
    assert mask_to_heads(torch.full((2, 2), 0.4)) == []


def test_circuit_json_round_trip(tmp_path):
    c = Circuit(model="tiny-llama", task="grammar", heads=("L1H0", "L0H3", "L0H10"), n_heads_total=24,
                scores={"val": {"accuracy": 0.9, "margin": 1.5}}, certificate={"verified": True},
                evaluations=17, seed=3, config={"experiment": {"model": "tiny-llama"}},
                extra={"method": "learned", "gates": {"L0H3": 0.97}})
    assert c.heads == ("L0H3", "L0H10", "L1H0")  # numeric, not lexicographic, order
    path = tmp_path / "c.json"
    c.save(path)
    d = json.loads(path.read_text())
    assert d["method"] == "learned" and d["heads"] == ["L0H3", "L0H10", "L1H0"] and d["kmshc_version"]
    back = read_circuit(path)
    assert back == c and back.to_dict() == c.to_dict()
    assert torch.equal(back.mask(2, 12), c.mask(2, 12))


@pytest.mark.parametrize("content,match", [
    ("{", "not valid UTF-8 JSON"),
    ("[]", "expected a JSON object"),
    ('{"task": "t", "heads": [], "n_heads_total": 4}', "missing field 'model'"),
    ('{"model": "m", "task": "t", "heads": ["L0H0", "X"], "n_heads_total": 4}', r"heads\[1\]"),
    ('{"model": "m", "task": "t", "heads": [], "n_heads_total": "4"}', "'n_heads_total' must be int"),
    ('{"model": "m", "task": "t", "heads": [], "n_heads_total": 4, "epsilon": "x"}', "'epsilon'"),
])
def test_read_circuit_names_file_and_field(tmp_path, content, match):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(KmshcError, match=match) as e:
        read_circuit(path)
    assert str(path) in str(e.value)
    with pytest.raises(KmshcError, match="not found"):
        read_circuit(tmp_path / "missing.json")


def test_atomic_write_leaves_no_temp_file(tmp_path):
    path = tmp_path / "sub" / "out.json"
    atomic_write_json(path, {"a": torch.tensor([1, 2]), "p": tmp_path})
    assert json.loads(path.read_text()) == {"a": [1, 2], "p": str(tmp_path)}
    atomic_write_text(path, "new\n")
    assert path.read_text() == "new\n"
    assert os.listdir(path.parent) == ["out.json"]
    # A failing serialisation leaves the old file intact and no temp file behind.
    with pytest.raises(TypeError):
        atomic_write_json(path, {"x": object()})
    assert path.read_text() == "new\n" and os.listdir(path.parent) == ["out.json"]
