"""dtype "auto": bf16 only where it is native (CUDA, or a CPU flag avx512_bf16/amx_bf16), else float32."""
from __future__ import annotations

import pytest
import torch

from kmshc.engine import models
from kmshc.types import KmshcError


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.mark.parametrize("flags, expected", [
    ({"sse4_2", "avx", "avx2", "fma"}, torch.float32),          # AVX2-only: bf16 would be emulated
    ({"avx2", "avx512f", "avx512_bf16"}, torch.bfloat16),
    ({"avx2", "amx_tile", "amx_bf16"}, torch.bfloat16),
    (set(), torch.float32),                                      # no /proc/cpuinfo
])
def test_auto_follows_cpu_flags(monkeypatch, no_cuda, flags, expected):
    monkeypatch.setattr(models, "cpu_flags", lambda: flags)
    assert models._resolve_dtype("auto") is expected


def test_auto_is_bf16_on_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(models, "cpu_flags", lambda: {"avx2"})
    assert models._resolve_dtype("auto") is torch.bfloat16


def test_cpu_flags_reads_the_flags_line(monkeypatch, tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: X\nflags\t\t: fpu avx2 amx_bf16\n\n")
    real_path = models.Path
    monkeypatch.setattr(models, "Path", lambda p: real_path(cpuinfo) if p == "/proc/cpuinfo" else real_path(p))
    assert models.cpu_flags() == {"fpu", "avx2", "amx_bf16"}


def test_auto_loads_a_tiny_model_in_the_resolved_dtype(monkeypatch, no_cuda):
    monkeypatch.setattr(models, "cpu_flags", lambda: {"avx512_bf16"})
    model, _ = models.load_model("tiny-gpt2", dtype="auto")
    assert next(model.parameters()).dtype is torch.bfloat16
    monkeypatch.setattr(models, "cpu_flags", lambda: {"avx2"})
    model, _ = models.load_model("tiny-gpt2", dtype="auto")
    assert next(model.parameters()).dtype is torch.float32


def test_unknown_dtype_names_auto_among_the_choices():
    with pytest.raises(KmshcError, match="auto"):
        models._resolve_dtype("float8")
