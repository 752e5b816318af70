"""bench/gpu_check.py: its commands, its agreement checks, and (where a GPU exists) the run itself."""
from __future__ import annotations


import pytest
import torch

from bench_loader import load_bench

GC = load_bench("gpu_check")


def test_dry_run_prints_every_step_on_every_device(capsys):
    assert GC.main(["--dry-run", "--limit", "50", "--cuda_dtype", "bfloat16"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 6
    cuda = [l for l in lines if "--device cuda" in l]
    assert len(cuda) == 3 and all("bfloat16" in l for l in cuda)
    assert any("kmshc score" in l for l in cuda) and any("train.py fit" in l for l in cuda)
    assert any("--mode warm" in l and "--from_run" in l for l in cuda)
    assert all("float32" in l for l in lines if "--device cpu" in l)


def test_jaccard():
    assert GC.jaccard({"L0H1", "L1H2"}, {"L1H2", "L3H0"}) == pytest.approx(1 / 3)
    assert GC.jaccard(set(), set()) == 1.0 and GC.jaccard({"L0H0"}, set()) == 0.0


def test_checks_fail_on_disagreement():
    ref = GC.DeviceRun("cpu", accuracy=0.90, learned={"L0H0", "L1H1"}, searched={"L0H0"})
    close = GC.DeviceRun("cuda", accuracy=0.905, learned={"L0H0", "L1H1", "L2H2"}, searched={"L0H0"})
    far = GC.DeviceRun("cuda", accuracy=0.80, learned={"L5H5"}, searched={"L0H0"})
    assert [ok for *_, ok in GC.checks(ref, close, 0.01, 0.5)] == [True, True, True]
    assert [ok for *_, ok in GC.checks(ref, far, 0.01, 0.5)] == [False, False, True]


@pytest.mark.veryslow  # six processes; about 9 minutes on the 2-core CPU
def test_cpu_path_runs_end_to_end(tmp_path):
    doc = tmp_path / "b.md"
    assert GC.main(["--devices", "cpu", "cpu", "--model", "tiny-gpt2", "--limit", "60", "--steps", "4",
                    "--threshold", "0.4", "--runs_dir", str(tmp_path / "runs"),
                    "--doc", str(doc)]) == 0
    assert "gpu_check: the main job on cpu, cpu" in doc.read_text()


@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_agrees_with_cpu_on_a_tiny_model(tmp_path):
    assert GC.main(["--model", "tiny-gpt2", "--limit", "60", "--steps", "4", "--threshold", "0.4",
                    "--runs_dir", str(tmp_path / "runs"), "--doc", "none"]) == 0
