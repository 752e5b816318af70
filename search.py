"""Search-K-MSHC and certify:  python search.py --config configs/search/tiny.yaml

The same as ``kmshc search ...`` (``--mode verify`` is ``kmshc verify``); the code lives in
:mod:`kmshc.entry.search`. The names below stay importable from here.
"""
import sys

from kmshc.entry.search import main, parse, summary  # noqa: F401

if __name__ == "__main__":
    from kmshc.cli import main as kmshc_main
    sys.exit(kmshc_main(["search", *sys.argv[1:]]))
