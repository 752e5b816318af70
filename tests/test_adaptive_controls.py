"""Adaptive decisions that borrow from a control set (kmshc.stats.recovery_bounds_with_control,
kmshc.search.seen): exact at m = n, valid by simulation, cheaper, and resumable."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from kmshc import stats
from kmshc.engine.readout import Outcome
from kmshc.search.decide import RecoveryScores, split_chunks
from kmshc.search.refine import refine
from kmshc.search.seen import SeenSets
from kmshc.search.state import Recorder
from kmshc.types import KmshcError
from test_adaptive_decisions import BASE, FULL, A, fake

EPS, ALPHA = 0.9, 0.1


def test_with_the_whole_split_it_is_the_plain_bound():
    rng = np.random.default_rng(0)
    xm, xb = 2 + rng.normal(0, 1, 200), rng.normal(0, 1, 200)
    xa, xc = 1.8 + rng.normal(0, 1, 200), 1.9 + rng.normal(0, 1, 200)
    assert stats.recovery_bounds_with_control(xa, xc, xb, xm, 0.95) == stats.recovery_bounds(xa, xb, xm, 0.95)
    with pytest.raises(ValueError, match="len"):
        stats.recovery_bounds_with_control(xa, xc[:100], xb, xm, 0.95)


def draw(rng, n: int, r_a: float, r_c: float, spread: float) -> tuple[np.ndarray, ...]:
    """Per-example margins ``x_a, x_c, x_b, x_m`` ``[n]``: a shared difficulty, each set's own noise,
    and A = C less a head worth ``2 (r_c − r_a)`` give or take ``spread``."""
    shared = rng.normal(0, 1, n)
    xm, xb = 2 + shared + rng.normal(0, 0.5, n), shared + rng.normal(0, 0.5, n)
    xc = 2 * r_c + shared + rng.normal(0, 0.5, n)
    return xc - 2 * (r_c - r_a) + rng.normal(0, spread, n), xc, xb, xm


def test_a_control_tightens_the_bound_and_keeps_its_level():
    """A seen on the first 50 of 400 examples, C (one head away) on all 400: over 4000 draws with
    r(A) = 0.9 exactly, the 90% lower bound exceeds 0.9 at most about 10% of the time; and it sits
    far closer to 0.9 than the bound from A's 50 examples alone."""
    rng = np.random.default_rng(1)
    above, width_cv, width_plain = 0, [], []
    for _ in range(4000):
        xa, xc, xb, xm = draw(rng, 400, EPS, 0.93, spread=0.1)
        lo, _ = stats.recovery_bounds_with_control(xa[:50], xc, xb, xm, 1 - ALPHA)
        plain, _ = stats.recovery_bounds(xa[:50], xb[:50], xm[:50], 1 - ALPHA)
        above += lo >= EPS
        width_cv.append(stats.recovery(xa, xb, xm) - lo)
        width_plain.append(stats.recovery(xa, xb, xm) - plain)
    assert above / 4000 <= ALPHA + 2.58 * math.sqrt(ALPHA * (1 - ALPHA) / 4000)
    assert np.median(width_cv) < 0.5 * np.median(width_plain)


C = torch.tensor([[1.0, 1, 0, 0]])  # the control: A and one more head


def decider(x: torch.Tensor, calls: list, seen: SeenSets | None) -> RecoveryScores:
    parts = split_chunks(x.shape[-1], 4)
    return RecoveryScores([fake(x, p, calls) for p in parts], full_mask=FULL, base_mask=BASE, metric="margin",
                          epsilon=EPS, confidence=1 - ALPHA, adaptive=True, seen=seen)


def rows(rng, r_a: float, r_c: float, n: int = 400, spread: float = 0.2) -> torch.Tensor:
    """Per-example margins ``[4, n]`` of FULL, BASE, A and C (see :func:`draw`)."""
    xa, xc, xb, xm = draw(rng, n, r_a, r_c, spread)
    return torch.from_numpy(np.stack([xm, xb, xa, xc]))


def test_adaptive_decisions_with_a_control_err_at_most_nominally():
    """C (true recovery 0.92, so it is often read to the end) is decided first and becomes A's
    control; A sits exactly at the bar. "A ≥ ε" comes out at most about α of the time."""
    rng = np.random.default_rng(2)
    above, borrowed = 0, 0
    for _ in range(1500):
        seen = SeenSets()
        d = decider(rows(rng, EPS, 0.92), [], seen)
        d(C[None])
        borrowed += seen.depths[0] > 0  # C was read beyond the first look, so A could borrow from it
        above += d(A[None])[0] >= EPS
    assert borrowed > 1000
    assert above / 1500 <= ALPHA + 2.58 * math.sqrt(ALPHA * (1 - ALPHA) / 1500)


def test_a_control_read_to_the_end_lets_a_clear_removal_stop_at_the_first_look():
    """r(C) = 0.96, r(A) = 0.95 on 800 examples. In a search, C and the references M and B have
    been read to the end by earlier decisions: with C as control, A's removal is settled on the
    first eighth of the split; without, A reads half of it."""
    x = rows(np.random.default_rng(2), 0.95, 0.96, n=800, spread=0.05)
    reads = {}
    for name, seen in (("control", SeenSets()), ("plain", None)):
        calls: list[int] = []
        d = decider(x, calls, seen)
        d._reference(3)  # M and B on all four chunks, as an earlier decision left them
        if seen is not None:
            seen.add([(C.bool().reshape(-1).numpy(), x[3].numpy(), 3)])  # C seen on all four chunks
        calls.clear()
        assert d(A[None])[0] >= EPS
        reads[name] = sum(calls)
    assert reads == {"control": 100, "plain": 400}


def planted_values(n: int = 160, heads: int = 8) -> torch.Tensor:
    """Per-example contributions of ``heads`` heads ``[heads, n]``: a head's weight times noise, so
    sets one head apart differ little per example. ``x_i(mask) = Σ_h mask_h c[h, i]``."""
    rng = np.random.default_rng(7)
    w = np.array([0.42, 0.25, 0.12, 0.07, 0.05, 0.035, 0.03, 0.025])[:heads]
    return torch.from_numpy(w[:, None] * (1 + 0.5 * rng.normal(0, 1, (heads, n))))


def search(out, *, resume: bool, cap: int | None = None):
    """The adaptive warm search over the planted heads, its state and scored sets in ``out``."""
    c = planted_values()

    def chunk(part):
        return lambda masks: Outcome(torch.ones(len(masks), part.stop - part.start),
                                     masks.reshape(len(masks), -1).double() @ c[:, part])
    out.mkdir(exist_ok=True)
    rs = RecoveryScores([chunk(p) for p in split_chunks(c.shape[1], 4)], full_mask=torch.ones(1, 8),
                        base_mask=torch.zeros(1, 8), metric="margin", epsilon=0.9, confidence=0.9, adaptive=True,
                        spending_power=1.0,  # sets read part-way, so controls of every depth
                        seen=SeenSets(out / "seen.npz", resume=resume))
    rec = Recorder(rs, path=out / "state.json", resume=resume, fingerprint={}, max_evaluations=cap)
    return refine(rec, (1, 8), {h: 1.0 - h / 20 for h in range(8)}, seed=0, strategy="ordered"), rec


def test_a_resumed_adaptive_search_borrows_from_the_same_controls(tmp_path):
    whole, rec = search(tmp_path / "a", resume=False)
    assert sum(d > 0 for d in SeenSets(tmp_path / "a" / "seen.npz", resume=True).depths) >= 3  # controls to borrow
    for name in ("b", "c"):
        assert search(tmp_path / name, resume=False, cap=6)[0].capped
    again, rec_b = search(tmp_path / "b", resume=True)
    assert again.heads == whole.heads and rec_b.log == rec.log and rec_b.trace == rec.trace
    # without the saved sets the resumed search has fewer controls, and its scores differ
    (tmp_path / "c" / "seen.npz").unlink()
    assert search(tmp_path / "c", resume=True)[1].log != rec.log


def test_a_malformed_file_of_scored_sets_names_itself(tmp_path):
    bad = tmp_path / "search_seen.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(KmshcError, match="search_seen.npz"):
        SeenSets(bad, resume=True)
    np.savez(bad, masks=np.ones((2, 4), bool), depths=np.array([1]), lengths=np.array([3, 3]), values=np.zeros(6))
    with pytest.raises(KmshcError, match="malformed"):
        SeenSets(bad, resume=True)


def test_the_search_config_decides_whether_decisions_borrow():
    from types import SimpleNamespace

    from kmshc.search.config import SearchConfig
    from kmshc.search.run import search_scores

    class Split(list):
        items = list(range(40))
    exp = SimpleNamespace(splits={"val": Split(range(40))}, scorer_for=lambda *a, **k: SimpleNamespace(outcomes=None))
    kinds = {}
    for flag in (True, False):
        cfg = SearchConfig(semantics="keep", decision="confident", adaptive=True, adaptive_controls=flag)
        rs, scorers = search_scores(cfg, exp, (1, 4), None)
        kinds[flag] = (type(rs.seen).__name__, len(scorers), len(rs.alphas))
    assert kinds == {True: ("SeenSets", 5, 5), False: ("NoneType", 5, 5)}
