"""End to end on the embedded SmolLM2 through the real CLI: 50 BLiMP pairs from $KMSHC_DATA, fp32."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _score(blimp_dir: Path, *extra: str) -> dict:
    data = blimp_dir / "determiner_noun_agreement_1.jsonl"
    if not data.is_file():
        pytest.skip(f"no {data.name} in $KMSHC_DATA/blimp ({blimp_dir})")
    cmd = [sys.executable, "-m", "kmshc", "score", "--model", "smollm2-135m", "--task", "blimp",
           "--data", str(data), "--limit", "50", *extra]  # fp32: the default dtype
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "WANDB_MODE": "offline"}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_full_model_beats_all_heads_zeroed(blimp_dir):
    full = _score(blimp_dir)
    assert full["n"] == 50 and full["task"] == "determiner_noun_agreement_1" and full["kept_heads"] == "all"
    assert full["accuracy"] > 0.85, full
    ablated = _score(blimp_dir, "--keep", "none", "--ablation", "zero")
    assert ablated["kept_heads"] == "none" and ablated["ablation"] == "zero"
    assert ablated["accuracy"] < full["accuracy"], (full, ablated)
