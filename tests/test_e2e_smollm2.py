"""End to end on the embedded SmolLM2 through the real CLI (issue 2 §7), 50 BLiMP pairs, fp32 (bf16 is emulated, hence slower, on AVX2-only CPUs)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = Path(__file__).parents[1] / "../shared/data/blimp/determiner_noun_agreement_1.jsonl"


def _score(*extra: str) -> dict:
    if not DATA.is_file():
        pytest.skip(f"BLiMP data not found at {DATA}")
    cmd = [sys.executable, "-m", "kmshc", "score", "--model", "smollm2-135m", "--task", "blimp",
           "--data", str(DATA), "--limit", "50", *extra]  # fp32: this CPU emulates bf16
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "WANDB_MODE": "offline"}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_full_model_beats_all_heads_zeroed():
    full = _score()
    assert full["n"] == 50 and full["task"] == "determiner_noun_agreement_1" and full["kept_heads"] == "all"
    assert full["accuracy"] > 0.85, full
    ablated = _score("--keep", "none", "--ablation", "zero")
    assert ablated["kept_heads"] == "none" and ablated["ablation"] == "zero"
    assert ablated["accuracy"] < full["accuracy"], (full, ablated)
