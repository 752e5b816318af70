"""docs/quickstart.md: its first python block runs end to end (on the tiny model)."""
from __future__ import annotations

import re
from pathlib import Path

import kmshc

DOC = Path(__file__).resolve().parents[1] / "docs" / "quickstart.md"


def first_python_block(text: str) -> str:
    match = re.search(r"^```python\n(.*?)^```", text, re.S | re.M)
    assert match, f"{DOC}: no ```python block"
    return match.group(1)


def test_the_first_block_runs_on_a_tiny_model(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("KMSHC_QUICKSTART_MODEL", "tiny-llama")
    monkeypatch.chdir(tmp_path)  # the block writes quickstart_circuit.json where it runs
    code = first_python_block(DOC.read_text(encoding="utf-8"))
    exec(compile(code, str(DOC), "exec"), {"__name__": "__quickstart__"})
    out = capsys.readouterr().out
    saved = kmshc.Circuit.load(tmp_path / "quickstart_circuit.json")
    assert saved.model == "tiny-llama" and saved.certificate is not None
    assert f"verified: {saved.certificate['verified']}" in out and "circuit only: next token" in out
