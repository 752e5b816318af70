"""Shared by the report tests: a tiny run folder with a two-head certified circuit, and headless Chromium."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

CIRCUIT = ["L0H1", "L1H2"]  # tiny-gpt2 has 2 layers x 4 heads
SECTION_IDS = ("summary", "grid", "certificate", "curves", "heads", "trace")


SEARCH = ["--config", "configs/search/tiny.yaml", "--progress", "false"]


def tiny_search(root: Path) -> Path:
    """``root/runs/t``: tiny gates (train), then a warm search."""
    from kmshc.cli import main
    run = root / "runs" / "t"
    assert main(["train", "--config", "configs/train/tiny.yaml", "--runs_dir", str(root / "runs"), "--name", "t",
                 "--trainer.max_steps", "4", "--trainer.enable_progress_bar", "false"]) == 0
    assert main(["search", *SEARCH, "--mode", "warm", "--from_run", str(run)]) == 0
    return run


def tiny_run(root: Path) -> Path:
    """:func:`tiny_search`, then the circuit :data:`CIRCUIT` certified by ``kmshc verify`` and put in
    place of the searched one (a random tiny model's own search keeps no head, and a report of an
    empty circuit would show nothing per head)."""
    from kmshc.cli import main
    run, search = tiny_search(root), SEARCH
    d = json.loads((run / "circuit_searched.json").read_text())
    d.update(heads=CIRCUIT, certificate=None)
    (root / "c2.json").write_text(json.dumps(d))
    assert main(["verify", *search, "--circuit", str(root / "c2.json")]) == 0
    shutil.copy(root / "circuit_verified.json", run / "circuit_searched.json")
    return run


def chromium() -> str | None:
    return next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


def open_in_chromium(browser: str, page: Path) -> tuple[str, list[str]]:
    """``(DOM after scripts ran, console lines)``: one headless load of ``page`` with console logging."""
    r = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0",
                        "--virtual-time-budget=2000", "--dump-dom", page.resolve().as_uri()],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout, [ln for ln in r.stderr.splitlines() if ":CONSOLE" in ln]
