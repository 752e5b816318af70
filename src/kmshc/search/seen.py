"""The head sets an adaptive search has scored, with their per-example values ``x [n_j]`` on the
chunks ``0..j`` it read: the controls of :meth:`kmshc.search.decide.RecoveryScores._bounds`.

They are saved beside the search state (``search_seen.npz``), so a resumed search borrows from the
same controls as an uninterrupted one and so makes the same decisions.
"""
from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np

from kmshc.types import KmshcError, atomic_write_bytes


class SeenSets:
    """Scored sets: flat 0/1 masks ``[E, L·H]``, values on chunks ``0..j`` and ``j`` per set.

    Args:
        path: the ``.npz`` file that keeps them across a resume; ``None`` keeps them in memory.
        resume: load ``path`` if it exists (a search interrupted before its first save has none).
        save: write ``path`` after each :meth:`add` (False on the ranks other than 0).
    """

    def __init__(self, path: str | Path | None = None, *, resume: bool = False, save: bool = True) -> None:
        self.path, self.save = (Path(path) if path else None), save
        self.masks: list[np.ndarray] = []
        self.values: list[np.ndarray] = []
        self.depths: list[int] = []
        self._stacked: np.ndarray | None = None  # masks as one [E, L·H] array, rebuilt after add
        if resume and self.path is not None and self.path.exists():
            self._load()

    def nearest(self, mask: np.ndarray, k: int, exclude: set[bytes]) -> tuple[np.ndarray, int] | None:
        """The set closest to ``mask`` (fewest heads changed; then seen on more chunks; then the
        earliest) among those seen beyond chunk ``k``, other than the masks in ``exclude``:
        ``(x, j)``; None when there is none."""
        if not self.masks:
            return None
        if self._stacked is None:
            self._stacked = np.stack(self.masks)
        dist = np.count_nonzero(self._stacked ^ mask[None], axis=1)
        usable = (e for e, j in enumerate(self.depths) if j > k and self.masks[e].tobytes() not in exclude)
        best = min(usable, key=lambda e: (dist[e], -self.depths[e], e), default=None)
        return None if best is None else (self.values[best], self.depths[best])

    def add(self, entries: list[tuple[np.ndarray, np.ndarray, int]]) -> None:
        """Keep ``(flat mask [L·H] bool, x [n_j], j)`` for each newly scored set, then save."""
        for mask, x, j in entries:
            self.masks.append(mask)
            self.values.append(x)
            self.depths.append(j)
        self._stacked = None
        if entries and self.path is not None and self.save:
            buf = io.BytesIO()
            np.savez(buf, masks=np.stack(self.masks), depths=np.asarray(self.depths, dtype=np.int64),
                     lengths=np.asarray([v.size for v in self.values], dtype=np.int64),
                     values=np.concatenate(self.values))
            atomic_write_bytes(self.path, buf.getvalue())

    def _load(self) -> None:
        try:
            with np.load(self.path) as d:
                masks, depths, lengths, values = (d[k] for k in ("masks", "depths", "lengths", "values"))
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
            raise KmshcError(f"{self.path}: cannot read the adaptive search's scored sets ({type(e).__name__}: "
                             f"{str(e)[:80]}); use --overwrite to start again") from None
        if not (masks.ndim == 2 and masks.dtype == bool and len(masks) == len(depths) == len(lengths)
                and int(lengths.sum()) == values.size):
            raise KmshcError(f"{self.path}: malformed scored sets (masks, depths, lengths and values disagree); "
                             "use --overwrite to start again")
        ends = np.cumsum(lengths)
        self.masks = list(masks)
        self.values = [values[e - n:e] for e, n in zip(ends, lengths)]
        self.depths = [int(j) for j in depths]
