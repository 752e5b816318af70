"""Ground truth in real weights: train the toy induction model, then check that train.py plus a
warm search find its known circuit (a previous-token head and an induction head), and that the
check fails when the ground truth is scrambled.

The reference comes from attention diagnostics only (kmshc.toy.ground_truth); the searched circuit
must hold the mechanism and reach MIN_PRECISION against it.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from kmshc.engine.diagnostics import HeadDiagnostics, head_diagnostics
from kmshc.toy.ground_truth import check_circuit, reference_circuit
from kmshc.engine.models import load_model
from kmshc.toy.induction import ToyConfig, save_toy, train_toy
from kmshc.types import read_circuit

# one xdist worker runs the module, so its ~1-minute fixture (train the toy, fit, search) runs once
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ground_truth")]

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import train  # noqa: E402  (the entry point at the repo root)

# At most one head in three outside the reference (a 2- or 3-head circuit may hold one stray head).
MIN_PRECISION = 0.6
TOY_TOKENS = range(2, 2 + ToyConfig.vocab)


def _search_entry():
    spec = importlib.util.spec_from_file_location("search_entry", ROOT / "search.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """The seed-0 toy model, its diagnostics, and the warm-searched circuit of train.py + search.py."""
    out = tmp_path_factory.mktemp("ground_truth")
    cfg = ToyConfig(seed=0)
    result = train_toy(cfg)
    model_dir = save_toy(result, cfg, out / "model")
    model, tok = load_model(str(model_dir))
    diag = head_diagnostics(model, tok, n_seq=32, period=10, token_ids=TOY_TOKENS)
    train.main(["fit", "--config", str(ROOT / "configs/train/toy.yaml"), "--data.experiment.model", str(model_dir),
                "--runs_dir", str(out), "--name", "learned", "--log_to", "none"])
    _search_entry().main(["--config", str(ROOT / "configs/search/toy.yaml"), "--mode", "warm",
                          "--from_run", str(out / "learned"), "--progress", "false"])
    return result, diag, read_circuit(out / "learned" / "circuit_searched.json")


def test_the_toy_learned_to_copy_with_an_induction_circuit(toy):
    result, diag, _ = toy
    assert result.copy_accuracy >= 0.9
    ref = reference_circuit(diag)
    assert ref.previous_token and ref.induction  # the diagnostics see the textbook circuit
    assert float(diag.induction[0].max()) < 0.3  # and no induction head in layer 0, which cannot host one


def test_warm_search_finds_a_previous_token_and_an_induction_head(toy):
    _, diag, circ = toy
    assert check_circuit(circ.heads, reference_circuit(diag), MIN_PRECISION) == []


def test_forward_selection_finds_them_without_training(toy):
    """Re-linearised attribution from no head, on the learned run's experiment (train split): the
    selected start holds the mechanism, with no training at all."""
    from kmshc.rank.forward_selection import forward_selection
    from kmshc.search.gates_file import read_gates
    _, diag, circ = toy
    exp = read_gates(Path(circ.extra["source"]).parent)[0]
    sel = forward_selection(exp.scorer_for("train"), target=0.9, max_heads=6)
    assert sel.reached and check_circuit(sel.start, reference_circuit(diag), MIN_PRECISION) == []


def _swap_layers(diag: HeadDiagnostics) -> HeadDiagnostics:
    flip = lambda t: torch.flip(t, dims=[0])  # noqa: E731
    return HeadDiagnostics(flip(diag.previous_token), flip(diag.duplicate_token), flip(diag.induction),
                           flip(diag.current_token))


def test_the_check_fails_on_shuffled_diagnostics(toy):
    """Scrambled ground truth (the layers' scores swapped) must fail the same check: layer 1 holds
    no previous-token head, so the scrambled reference has none for the circuit to contain."""
    _, diag, circ = toy
    scrambled = reference_circuit(_swap_layers(diag))
    assert scrambled.previous_token == ()
    failures = check_circuit(circ.heads, scrambled, MIN_PRECISION)
    assert any("no previous-token head" in f for f in failures)
