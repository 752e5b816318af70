"""See a circuit: ``kmshc report RUN_DIR`` writes ``RUN_DIR/report.html``, one self-contained page.

The page has no network dependency: its styles, charts (inline SVG) and the few lines of script
are written here, so it opens offline in any browser (docs/report.md).

* :mod:`kmshc.view.gather`: what a run folder holds (files, summary, head grid, certificate,
  search trace) as typed dataclasses; pure, no model.
* :mod:`kmshc.view.probe`: what needs the model (head diagnostics, attention patterns, direct
  effects, faithfulness curves), in a few batched forwards.
* :mod:`kmshc.view.svg`, :mod:`kmshc.view.page`: HTML rendering of the gathered data.
* :mod:`kmshc.view.write`: the verb, the API function :func:`report`, and the index pages of
  ``kmshc compare`` and ``kmshc redundancy`` folders.

The package is not called ``report`` because ``kmshc.report`` is the API function (a subpackage
of that name would shadow it once imported).
"""
from __future__ import annotations

from kmshc.view.write import report

__all__ = ["report"]
