"""The tiny-model report in headless Chromium: no console error, every section, L x H grid cells,
and the attention view drawn by the page's own script.

Skipped only where no Chromium is installed (``apt-get install chromium``; see the README).
"""
from __future__ import annotations

import json
import re

import pytest

from view_helpers import CIRCUIT, SECTION_IDS, chromium, open_in_chromium, tiny_run

BROWSER = chromium()
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(BROWSER is None, reason="no Chromium on PATH (chromium, chromium-browser or "
                                                         "google-chrome); install it with `apt-get install chromium`")]


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    from kmshc.view import report
    page = report(tiny_run(tmp_path_factory.mktemp("browser")))
    return page, *open_in_chromium(BROWSER, page)


def test_the_console_check_catches_a_script_error(tmp_path):
    bad = tmp_path / "bad.html"
    bad.write_text("<html><body><script>console.error('bad thing'); notDefined();</script></body></html>")
    _, console = open_in_chromium(BROWSER, bad)
    assert any("bad thing" in ln for ln in console) and any("notDefined" in ln for ln in console)


def test_the_report_loads_without_console_errors(loaded):
    _, dom, console = loaded
    assert console == [], "\n".join(console)
    assert "</html>" in dom


def test_every_section_and_every_head_cell_is_there(loaded):
    _, dom, _ = loaded
    for sid in SECTION_IDS:
        assert re.search(rf'<section id="{sid}">\s*<h2>', dom), sid
    cells = re.findall(r'<rect class="cell[^"]*" data-head="(L\d+H\d+)"', dom)
    assert len(cells) == 2 * 4 == len(set(cells))


def test_the_script_drew_the_attention_view(loaded):
    page, dom, _ = loaded
    data = json.loads(re.search(r'id="attn-data">(.*?)</script>', page.read_text(), re.S).group(1))
    options = re.findall(r"<option value=\"(L\d+H\d+)\">", dom)
    assert options == CIRCUIT
    spans = re.findall(r'<span class="tok( q)?"', dom)
    assert len(spans) == sum(len(ex["tokens"]) for ex in data) and sum(bool(q) for q in spans) == len(data)
