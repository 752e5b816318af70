"""Resume: a search interrupted after n evaluations and resumed reaches the uninterrupted result."""
from __future__ import annotations

import json
import random

import pytest
import torch

from kmshc.search import Recorder, cold_search, refine
from kmshc.types import KmshcError

SHAPE = (5, 6)


class Crash(Exception):
    pass


def planted(calls: list[int], crash_after: int | None = None):
    """Monotone graded score with two OR-groups; raises :class:`Crash` once ``crash_after`` masks were scored."""
    required, groups = [{3}, {17}, {25}], [{1, 8, 9}, {20, 21}]

    def evaluate_many(masks: torch.Tensor) -> list[float]:
        if crash_after is not None and sum(calls) + len(masks) > crash_after:
            raise Crash
        calls.append(len(masks))
        out = []
        for m in masks:
            on = set(torch.nonzero(m.reshape(-1) > 0.5).flatten().tolist())
            out.append(0.5 + 0.1 * sum(bool(on & c) for c in required + groups))
        return out
    return evaluate_many


SEARCHES = {
    "cold-keep": lambda rec: cold_search(rec, SHAPE, semantics="keep", N=5, seed=7),
    "cold-paper": lambda rec: cold_search(rec, SHAPE, semantics="paper", N=5, seed=7, window=1, percentile=50),
    "warm": lambda rec: refine(rec, SHAPE, {h: random.Random(h).random() for h in range(30)}, N=5, seed=7,
                               strategy="bundles"),
    "warm-ordered": lambda rec: refine(rec, SHAPE, {h: random.Random(h).random() for h in range(30)}, seed=7,
                                       strategy="ordered"),
}


@pytest.mark.parametrize("kind", sorted(SEARCHES))
@pytest.mark.parametrize("crash_at", ["after_first_batch", 9, 23])
def test_resume_reaches_the_uninterrupted_result(tmp_path, kind, crash_at):
    """Every case crashes after at least one saved batch, so every case really resumes (a crash
    inside the first batch leaves no state to resume from; that is the no-state test below)."""
    search = SEARCHES[kind]
    ref_calls: list[int] = []
    ref_rec = Recorder(planted(ref_calls))
    ref = search(ref_rec)
    crash_after = ref_calls[0] if crash_at == "after_first_batch" else crash_at
    state = tmp_path / "search_state.json"
    first: list[int] = []
    with pytest.raises(Crash):
        search(Recorder(planted(first, crash_after), path=state, fingerprint={"seed": 7}))
    saved = json.loads(state.read_text())
    assert 0 < len(saved["log"]) == sum(first) and not saved["done"]  # every finished batch was saved
    live: list[int] = []
    rec = Recorder(planted(live), path=state, resume=True, fingerprint={"seed": 7})
    res = search(rec)
    assert res.heads == ref.heads and res.trace == ref.trace
    assert res.evaluations == ref.evaluations == sum(first) + sum(live)  # replayed evaluations are not repeated
    assert rec.repeats == ref_rec.repeats  # the resumed run rebuilt the same cache of seen masks
    final = json.loads(state.read_text())
    assert final["done"] and final["evaluations"] == res.evaluations


def test_resume_with_another_configuration_is_refused(tmp_path):
    state = tmp_path / "s.json"
    cold_search(Recorder(planted([]), path=state, fingerprint={"seed": 7, "N": 5}), SHAPE, N=5, seed=7)
    with pytest.raises(KmshcError, match="fields differ: N"):
        Recorder(planted([]), path=state, resume=True, fingerprint={"seed": 7, "N": 6})


def test_resume_that_asks_for_other_masks_is_refused(tmp_path):
    state = tmp_path / "s.json"
    cold_search(Recorder(planted([]), path=state), SHAPE, N=5, seed=7)
    with pytest.raises(KmshcError, match="diverged"):
        cold_search(Recorder(planted([]), path=state, resume=True), SHAPE, N=5, seed=8)


def test_resume_without_state_is_an_error(tmp_path):
    with pytest.raises(KmshcError, match="no search state"):
        Recorder(planted([]), path=tmp_path / "missing.json", resume=True)
    state = tmp_path / "s.json"  # a crash inside the very first batch saves nothing
    with pytest.raises(Crash):
        cold_search(Recorder(planted([], crash_after=1), path=state), SHAPE, N=5, seed=7)
    assert not state.exists()


def test_evaluation_cap_stops_the_search_and_marks_it(tmp_path):
    calls: list[int] = []
    res = cold_search(Recorder(planted(calls), max_evaluations=25), SHAPE, N=5, seed=7)
    assert res.capped and res.evaluations == sum(calls) <= 25


def test_a_repeated_mask_is_answered_from_the_log_not_evaluated_again():
    calls: list[int] = []
    rec = Recorder(planted(calls))
    a, b = torch.zeros(SHAPE), torch.ones(SHAPE)
    assert rec.many(torch.stack([a, b, a])) == pytest.approx([0.5, 1.0, 0.5])
    assert rec.one(b) == pytest.approx(1.0)
    assert calls == [2] and rec.evaluations == 2 and rec.repeats == 2  # a twice in one batch, b again later


def test_the_warm_ordered_search_repeats_masks_so_the_resume_test_covers_the_cache():
    rec = Recorder(planted([]))
    res = SEARCHES["warm-ordered"](rec)
    assert rec.repeats > 0 and res.info["repeats"] == rec.repeats


def _replayed(kind: str, trace: tuple) -> set[int]:
    """The set a search had reached, rebuilt from its decisions alone."""
    gates = {h: random.Random(h).random() for h in range(30)}
    C = set(range(30)) if kind.startswith("cold") else {h for h, g in gates.items() if g > 0.5}
    for e in trace:
        if e["event"] == "macro":
            C = {l * SHAPE[1] + h for l in e["layers"] for h in range(SHAPE[1])}
        elif e["event"] == "restored_in_gate_order":
            C |= set(sorted(set(gates) - C, key=lambda h: (-gates[h], h))[:e["added"]])
        elif e["event"] in ("remove_bundle", "remove_failing_bundle"):
            C -= set(e["bundle"])
        elif e["event"] in ("drop_head", "remove_head"):
            C.discard(e["head"])
        elif e["event"] in ("drop_block", "remove_block"):
            C -= set(e["heads"])
    return C


@pytest.mark.parametrize("kind", sorted(SEARCHES))
def test_a_capped_search_reports_the_set_it_had_reached(kind):
    """Stopped by its budget in any stage, a search returns the set of its last decision, not the
    set that stage started from (a capped paper search once reported its 81 macro candidates)."""
    full = SEARCHES[kind](Recorder(planted([])))
    stopped_mid_stage = 0
    for cap in range(0, full.evaluations):
        res = SEARCHES[kind](Recorder(planted([]), max_evaluations=cap))
        assert res.capped and res.evaluations <= cap
        heads = {int(n[1:].split("H")[0]) * SHAPE[1] + int(n.split("H")[1]) for n in res.heads}
        assert heads == _replayed(kind, res.trace), cap
        stopped_mid_stage += any(e["event"] in ("remove_bundle", "remove_failing_bundle", "drop_head", "remove_head",
                                                "remove_block") for e in res.trace)
    assert stopped_mid_stage > 0  # some caps fell after a removal, where the old code lost it


def test_a_state_saved_by_an_older_version_resumes_when_only_names_and_ignored_fields_differ(tmp_path):
    """States written before the gate threshold was renamed (``tau``) and with certificate settings in
    their fingerprint resume; a real difference is still refused."""
    from kmshc.search.run import older_fingerprint
    state = tmp_path / "search_state.json"
    old = {"seed": 7, "tau": 0.5, "max_test_items": 4000, "repairs": 3}
    cold_search(Recorder(planted([]), path=state, fingerprint=old), SHAPE, N=5, seed=7)
    now = {"seed": 7, "gate_threshold": 0.5}
    Recorder(planted([]), path=state, resume=True, fingerprint=now, older=older_fingerprint)
    with pytest.raises(KmshcError, match="gate_threshold"):
        Recorder(planted([]), path=state, resume=True, fingerprint={"seed": 7, "gate_threshold": 0.6},
                 older=older_fingerprint)
    with pytest.raises(KmshcError, match="differ"):  # without the translation the old names differ
        Recorder(planted([]), path=state, resume=True, fingerprint=now)
