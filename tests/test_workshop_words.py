"""What ships speaks to any user on any machine: data is found through ``KMSHC_DATA`` (only the
test script may point it at a neighbouring folder), nothing cites a document the repository does
not hold, and no comment describes the machine it was written on."""
from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHIPPED = ["configs", "bench", "scripts", "src", "tests", "docs", "README.md", "pyproject.toml", "train.py",
           "search.py"]
SUFFIXES = {".py", ".sh", ".yaml", ".yml", ".md", ".toml"}
# (phrase, paths where it may stay: the one allowed user)
RULES = [("../shared/" + "data", ("scripts/test.sh",)),
         ("DESIGN" + " §", ()),
         ("this " + "CPU", ()), ("this " + "machine's", ())]


def shipped_files() -> list[Path]:
    files = []
    for name in SHIPPED:
        root = REPO / name
        files += [root] if root.is_file() else [p for p in root.rglob("*") if p.suffix in SUFFIXES]
    return [p for p in files if p.is_file() and ".venv" not in p.parts and p != Path(__file__).resolve()]


def offenders(files: list[Path], phrase: str, allowed: tuple[str, ...], root: Path = REPO) -> list[str]:
    rel = [(p, p.relative_to(root).as_posix()) for p in files]
    return [r for p, r in rel if not r.startswith(allowed) and phrase in p.read_text(encoding="utf-8", errors="replace")]


def test_the_checker_finds_a_phrase_outside_its_allowed_paths(tmp_path):
    (tmp_path / "a.yaml").write_text("data: ../shared/" + "data/blimp/x.jsonl\n")
    (tmp_path / "b.sh").write_text("KMSHC_DATA=../shared/" + "data\n")
    files = [tmp_path / "a.yaml", tmp_path / "b.sh"]
    assert offenders(files, "../shared/" + "data", ("b.sh",), root=tmp_path) == ["a.yaml"]


@pytest.mark.parametrize("phrase, allowed", RULES, ids=[r[0] for r in RULES])
def test_no_workshop_words_in_what_ships(phrase, allowed):
    assert offenders(shipped_files(), phrase, allowed) == []
