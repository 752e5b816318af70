"""A search's run directory: where it is, what it writes (its file names), the checks before a run starts, and the lock that keeps two searches out of one
directory."""
from __future__ import annotations

import os
from pathlib import Path

from kmshc.search.config import SearchConfig
from kmshc.types import KmshcError, ensure_writable_dir

STATE, SEARCHED, VERIFIED = "search_state.json", "circuit_searched.json", "circuit_verified.json"
SEEN = "search_seen.npz"  # the sets an adaptive search scored, with their values (kmshc.search.seen)


LOCK = ".search.lock"


def acquire_lock(out: Path) -> None:
    """One search per run directory: two at once would interleave ``search_state.json``.

    The lock file holds the owner's pid; a lock whose process is gone is stale and taken over.
    """
    lock = out / LOCK
    for _ in range(3):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                pid = int(lock.read_text().strip() or 0)
            except (OSError, ValueError):
                pid = 0
            if pid and pid != os.getpid() and _alive(pid):
                raise KmshcError(f"{out}: another search (pid {pid}) is running in this run directory; "
                                 f"wait for it, or stop it and use --resume true") from None
            lock.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        return
    raise KmshcError(f"{lock}: cannot take the run directory's lock")


def release_lock(out: Path) -> None:
    lock = out / LOCK
    try:
        if int(lock.read_text().strip() or 0) == os.getpid():
            lock.unlink()
    except (OSError, ValueError):
        pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def output_dir(cfg: SearchConfig) -> Path:
    """The run directory of ``cfg``: ``out`` if set, else the mode's folder."""
    if cfg.mode == "warm" and not cfg.from_run:
        raise KmshcError("warm mode needs --from_run runs/<name> (a train.py run directory)")
    if cfg.mode == "verify" and not cfg.circuit:
        raise KmshcError("verify mode needs --circuit PATH (a circuit JSON file)")
    if cfg.out:
        return Path(cfg.out)
    if cfg.mode == "warm":  # the searched circuit goes next to the gates it refines (docs/search.md)
        return Path(cfg.from_run)
    if cfg.mode == "verify":  # the certificate goes next to the circuit it checks
        return Path(cfg.circuit).parent
    if cfg.name:
        return Path(cfg.runs_dir) / cfg.name
    return Path(cfg.runs_dir) / f"{cfg.mode}-{cfg.semantics}"


def prepare(out: Path, cfg: SearchConfig) -> None:
    """Take the run directory's lock and refuse to clobber earlier results unless ``overwrite``
    (or ``resume``). The config's values were checked when it was built (``SearchConfig.__post_init__``)."""
    fresh_cold = cfg.mode == "cold" and not (out.exists() and any(out.iterdir()))
    ensure_writable_dir(out, "run directory")  # before the model loads: fail in seconds, not after the search
    acquire_lock(out)
    ours = [out / VERIFIED] if cfg.mode == "verify" else [out / SEARCHED, out / STATE, out / SEEN]
    existing = [p for p in ours if p.exists()] or ([out] if cfg.mode == "cold" and not fresh_cold else [])
    if existing and not (cfg.overwrite or cfg.resume):
        release_lock(out)
        raise KmshcError(f"{existing[0]} exists; pass --overwrite true to replace it or --resume true to continue")
    if cfg.overwrite:
        for p in ours:
            p.unlink(missing_ok=True)
