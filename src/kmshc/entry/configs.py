"""Finding the shipped config files (``configs/train/*.yaml``, ``configs/search/*.yaml``).

The files live once, in the checkout's top-level ``configs/`` folder. A wheel carries a copy
inside the package (``kmshc/configs/``, copied by ``setup.py`` at build time), because an
installed package has no checkout around it. So ``--config configs/train/tiny.yaml`` means, in
this order: that path from the current directory (a user's own file wins), the checkout the
package was imported from (a clone, an editable install, ``PYTHONPATH=src``), then the copy
inside an installed package.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

PACKAGE = Path(__file__).resolve().parents[1]  # .../kmshc
PREFIX = "configs/"


def config_roots() -> list[Path]:
    """Folders that may hold ``configs/``: the checkout around ``src/kmshc``, then the package itself."""
    return [PACKAGE.parents[1], PACKAGE]


def resolve_config(path: str, roots: Sequence[Path] | None = None) -> str:
    """``path`` itself when it exists; else a relative ``configs/...`` path under the first root
    that has it; else ``path`` unchanged, so the parser reports the missing file as the user wrote it."""
    p = Path(path)
    if p.exists() or p.is_absolute() or not p.as_posix().startswith(PREFIX):
        return path
    for root in config_roots() if roots is None else roots:
        if (root / p).is_file():
            return str(root / p)
    return path


def resolve_config_args(argv: Sequence[str], roots: Sequence[Path] | None = None) -> list[str]:
    """``argv`` with the value of every ``--config PATH`` / ``--config=PATH`` passed through
    :func:`resolve_config` (jsonargparse allows several ``--config``, applied in order)."""
    out, after_flag = [], False
    for arg in argv:
        if after_flag:
            arg = resolve_config(arg, roots)
        elif arg.startswith("--config="):
            arg = "--config=" + resolve_config(arg[len("--config="):], roots)
        after_flag = arg == "--config"
        out.append(arg)
    return out
