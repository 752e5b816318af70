"""Safe loading and crash-safe writing.

* No remote code unless asked: ``trust_remote_code`` is False by default all the way down.
* Everything the library reads back with ``torch.load`` uses ``weights_only=True`` (source audit).
* Cached weights are safetensors (the GGUF -> cache path, exercised on a tiny model).
* Every result file is written by temp file + rename (source audit), and a writer killed with
  SIGKILL mid-write leaves the old or the new file, never a mix.
"""
from __future__ import annotations

import ast
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from kmshc.types import atomic_write_text

REPO = Path(__file__).resolve().parents[1]
SOURCES = sorted((REPO / "src" / "kmshc").rglob("*.py")) + [p for p in (REPO / "train.py", REPO / "search.py")
                                                             if p.exists()]


# ----------------------------------------------------------------------------- trust_remote_code
@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    from kmshc.engine.tiny import tiny_model
    d = tmp_path_factory.mktemp("tiny_llama")
    model, tok = tiny_model("llama")
    model.save_pretrained(d)
    tok.save_pretrained(d)
    return d


@pytest.fixture
def recorded(monkeypatch):
    """Wrap transformers' two ``from_pretrained`` entry points and record their keyword arguments."""
    import transformers
    calls: list[tuple[str, dict]] = []
    for cls in (transformers.AutoTokenizer, transformers.AutoModelForCausalLM):
        real = cls.from_pretrained.__func__

        def wrapper(klass, *a, _real=real, _name=cls.__name__, **k):
            calls.append((_name, k))
            return _real(klass, *a, **k)
        monkeypatch.setattr(cls, "from_pretrained", classmethod(wrapper))
    return calls


def test_no_remote_code_by_default(model_dir, recorded):
    from kmshc.experiment import Experiment
    from kmshc.engine.models import load_model
    load_model(str(model_dir))
    Experiment(model=str(model_dir), task="grammar", n=20).loaded
    assert {name for name, _ in recorded} == {"AutoTokenizer", "AutoModelForCausalLM"}
    assert len(recorded) == 4 and all(k.get("trust_remote_code") is False for _, k in recorded), recorded


def test_remote_code_only_when_asked(model_dir, recorded):
    from kmshc.engine.models import load_model
    load_model(str(model_dir), trust_remote_code=True)
    assert [k.get("trust_remote_code") for _, k in recorded] == [True, True]


# ----------------------------------------------------------------------------- source audits
def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node


def _dotted(f: ast.AST) -> str:
    parts = []
    while isinstance(f, ast.Attribute):
        parts.append(f.attr)
        f = f.value
    if isinstance(f, ast.Name):
        parts.append(f.id)
    return ".".join(reversed(parts))


def _kw(call: ast.Call, name: str):
    return next((k.value for k in call.keywords if k.arg == name), None)


def test_torch_load_is_weights_only_and_no_remote_code_is_hardwired():
    bad = []
    for path in SOURCES:
        for call in _calls(ast.parse(path.read_text(), str(path))):
            where = f"{path.relative_to(REPO)}:{call.lineno}"
            if _dotted(call.func) == "torch.load":
                wo = _kw(call, "weights_only")
                if not (isinstance(wo, ast.Constant) and wo.value is True):
                    bad.append(f"{where}: torch.load without weights_only=True")
            trc = _kw(call, "trust_remote_code")
            if isinstance(trc, ast.Constant) and trc.value is True:
                bad.append(f"{where}: trust_remote_code=True hard-wired")
    assert not bad, "\n".join(bad)


def _buffers(func: ast.AST) -> set[str]:
    """Names assigned from ``io.BytesIO()``/``BytesIO()`` inside ``func``: in-memory targets are fine."""
    out = set()
    for node in ast.walk(func):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call) and \
                _dotted(node.value.func) in ("io.BytesIO", "BytesIO", "io.StringIO", "StringIO"):
            out |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    return out


def _non_atomic_writes(path: Path, root: Path = REPO) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    bad = []
    for func in [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]:
        if "atomic" in func.name:  # the temp-file-and-rename helpers themselves
            continue
        if func.name == "acquire_lock":  # an O_EXCL pid lock file: created atomically, holds no result
            continue
        buffers = _buffers(func)
        for call in _calls(func):
            name, where = _dotted(call.func), f"{path.relative_to(root)}:{call.lineno} ({func.name})"
            target = call.args[0] if call.args else None
            in_memory = isinstance(target, ast.Name) and target.id in buffers
            mode = call.args[1] if len(call.args) > 1 else _kw(call, "mode")
            if name in ("open", "os.fdopen") and isinstance(mode, ast.Constant) and set(str(mode.value)) & set("wax"):
                bad.append(f"{where}: {name}(..., {mode.value!r})")
            elif name.endswith((".savefig", ".write_text", ".write_bytes")) and not in_memory:
                bad.append(f"{where}: {name}")
            elif name in ("torch.save", "json.dump", "np.save", "numpy.save") and \
                    not (len(call.args) > 1 and isinstance(call.args[1], ast.Name) and call.args[1].id in buffers) \
                    and not in_memory:
                bad.append(f"{where}: {name}")
    return bad


def test_every_result_file_is_written_atomically():
    """No direct writes to final paths anywhere in the library or the entry points."""
    bad = [b for p in SOURCES for b in _non_atomic_writes(p)]
    assert not bad, "write through kmshc.types.atomic_write_* instead:\n" + "\n".join(bad)


def test_the_audit_can_fail(tmp_path):
    """The audit recognises the patterns it forbids (so a clean pass above means something)."""
    src = tmp_path / "x.py"
    src.write_text("import json, torch, io\n"
                   "def f(fig, p, obj):\n"
                   "    open(p, 'w').write('x')\n    json.dump(obj, open(p))\n    fig.savefig(p)\n"
                   "    torch.save(obj, p)\n    p.write_text('x')\n"
                   "def g(fig, obj):\n    buf = io.BytesIO()\n    fig.savefig(buf)\n    torch.save(obj, buf)\n")
    assert len(_non_atomic_writes(src, root=tmp_path)) == 5


# ----------------------------------------------------------------------------- atomic writes, for real
WRITER = """
import sys
from kmshc.types import atomic_write_text
path, n = sys.argv[1], int(sys.argv[2])
open(sys.argv[3], "w").close()  # tell the parent we are in the loop
i = 0
while True:
    atomic_write_text(path, ("ab"[i % 2]) * n)
    i += 1
"""


@pytest.mark.slow
def test_sigkill_during_writes_leaves_a_whole_file(tmp_path):
    """Kill a process that rewrites a 4 MB file in a loop: the file is always one whole version."""
    path, ready, n = tmp_path / "result.txt", tmp_path / "ready", 4_000_000
    atomic_write_text(path, "a" * n)
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(n), str(ready)],
                            env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    try:
        for _ in range(1200):  # up to 120 s for the child to import torch on a loaded machine
            if ready.exists() or proc.poll() is not None:
                break
            time.sleep(0.1)
        assert ready.exists(), "writer did not start"
        time.sleep(0.5)  # let it rewrite the file several times
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = path.read_text()
    assert len(text) == n and text in ("a" * n, "b" * n)
    assert proc.returncode == -signal.SIGKILL


def test_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "circuit.json"
    atomic_write_text(path, "old\n")

    def disk_full(fd):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError):
        atomic_write_text(path, "new\n")
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["circuit.json"]  # no temp file left behind


# ----------------------------------------------------------------------------- safetensors cache
@pytest.fixture
def fake_gguf(tmp_path, monkeypatch):
    """``(gguf path, reference tiny Llama, conversions)``: transformers' GGUF reader is swapped for a
    tiny Llama (so no real GGUF file is needed), ``conversions`` counts its reads, and the cache is
    ``tmp_path/cache``."""
    import transformers

    from kmshc.engine.tiny import tiny_model
    ref, tok = tiny_model("llama")
    real_tok, real_model = transformers.AutoTokenizer.from_pretrained, transformers.AutoModelForCausalLM.from_pretrained
    conversions: list[int] = []

    def fake_tok(*a, **k):
        return tok if "gguf_file" in k else real_tok(*a, **k)

    def fake_model(*a, **k):
        if "gguf_file" in k:
            conversions.append(1)
            time.sleep(0.2)  # a slow conversion, so a second loader arrives while the first converts
            return ref
        return real_model(*a, **k)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", fake_tok)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", fake_model)
    monkeypatch.setenv("KMSHC_CACHE", str(tmp_path / "cache"))
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF" + b"\0" * 60)
    return gguf, ref, conversions


def test_gguf_cache_is_safetensors(tmp_path, fake_gguf):
    """The GGUF -> cache conversion (used for SmolLM2) writes safetensors only and reloads identically."""
    from kmshc.engine import models
    gguf, ref, _ = fake_gguf
    model, _ = models._load_gguf(gguf, torch.float32, "eager", cache_key="tiny-cache")
    cached = tmp_path / "cache" / "tiny-cache"
    weights = sorted(p.name for p in cached.iterdir() if p.suffix in (".safetensors", ".bin", ".pt", ".pth", ".pkl"))
    assert weights == ["model.safetensors"]
    assert sorted(p.name for p in (tmp_path / "cache").iterdir() if p.is_dir()) == ["tiny-cache"]  # no temp folder left
    ids = torch.tensor([[1, 5, 9, 20]])
    assert torch.equal(model(ids).logits, ref(ids).logits)


def test_gguf_cache_is_converted_once_by_concurrent_loaders(fake_gguf):
    """Two loaders at once (parallel test workers, two jobs): one converts, the other waits and reads
    its cache; neither deletes the folder the other loads from."""
    from concurrent.futures import ThreadPoolExecutor

    from kmshc.engine import models
    gguf, ref, conversions = fake_gguf
    with ThreadPoolExecutor(2) as pool:
        loaded = list(pool.map(lambda _: models._load_gguf(gguf, torch.float32, "eager", cache_key="tiny-cache")[0],
                               range(2)))
    assert len(conversions) == 1
    ids = torch.tensor([[1, 5, 9, 20]])
    for model in loaded:
        assert torch.equal(model(ids).logits, ref(ids).logits)


def test_user_smollm2_cache_holds_no_pickles():
    from kmshc.engine.models import cache_dir
    cached = cache_dir() / "smollm2-135m-instruct"
    if not cached.is_dir():
        pytest.skip(f"no SmolLM2 cache at {cached}")
    names = {p.name for p in cached.iterdir()}
    assert "model.safetensors" in names
    assert not [n for n in names if n.endswith((".bin", ".pt", ".pth", ".pkl", ".ckpt"))]
