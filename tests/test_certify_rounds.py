"""Certify until decided: the schedule, the three verdicts, fresh items and the rounds' store."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from kmshc.search.certificate import CertificateConfig
from kmshc.search.rounds import ScoredRounds
from kmshc.search.sequential import Sequential, look_alphas, run_looks, schedule
from kmshc.tasks import ioi_task, load_blimp_jsonl
from kmshc.tasks.base import split_task
from kmshc.tasks.fresh import FreshItems, item_key, unused_file_items

CFG = CertificateConfig()


def test_schedule_doubles_to_the_cap_and_spends_alpha_exactly():
    assert schedule(240, None) == [240]
    assert schedule(240, 240) == [240]
    assert schedule(240, 4000) == [240, 480, 960, 1920, 4000]  # not 3840 then 4000
    sizes = schedule(100, 1000)
    assert sizes == [100, 200, 400, 1000]
    for power in (1.0, 2.0):
        a = look_alphas(sizes, 0.05, power)
        assert sum(a) == pytest.approx(0.05) and all(x > 0 for x in a)
    assert look_alphas([240], 0.05, 1.0) == [0.05]  # one look: the fixed-n certificate


def population(rng, n, r_circuit, r_removals, noise=1.0):
    """Margins of M, B, C and each removal on n shared examples, with the given true recoveries."""
    shared = rng.normal(0, 2, n)
    rows = {"full": 4.0, "base": 0.0, "circuit": 4.0 * r_circuit,
            **{f"h{i}": 4.0 * r for i, r in enumerate(r_removals)}}
    return {k: (mu + shared + rng.normal(0, noise, n), (mu + shared > 0).astype(float)) for k, mu in rows.items()}


def source(rng, r_circuit, r_removals, limit=None):
    """``more`` for run_looks: fresh draws from the same population, at most ``limit`` fresh items."""
    given = [0]

    def more(k, count, rows):
        if limit is not None:
            count = min(count, limit - given[0])
            if count <= 0:
                return None
        given[0] += count
        vals = population(rng, count, r_circuit, r_removals)
        return {r: vals[r] for r in rows}, "simulated"
    return more


def run(rng, r_circuit, r_removals, n0=100, cap=3200, limit=None):
    seq = Sequential([f"h{i}" for i in range(len(r_removals))], 1.0, CFG, "margin")
    sizes = schedule(n0, cap)
    looks, _ = run_looks(seq, population(rng, n0, r_circuit, r_removals), source(rng, r_circuit, r_removals, limit),
                         sizes, look_alphas(sizes, CFG.alpha, CFG.spending_power), "test")
    return seq, looks


def test_a_circuit_too_close_to_call_on_the_test_split_is_verified_on_more_items():
    rng = np.random.default_rng(0)
    seq, looks = run(rng, 1.0, [0.85, 0.86])  # removals 0.14 under the window's edge 1.05... needs items
    assert seq.verdict == "verified"
    assert len(looks) > 1 and looks[-1].n > 100  # it needed fresh items
    assert looks[-1].open == []
    # later rounds score only M, B, C and the open removals: each round's alpha is its own
    assert [lk.alpha for lk in looks] == pytest.approx(look_alphas(schedule(100, 3200), CFG.alpha, CFG.spending_power)[:len(looks)],
                                                         abs=1e-6)


def test_a_removable_head_refutes_and_stops_drawing():
    rng = np.random.default_rng(1)
    seq, looks = run(rng, 1.0, [0.5, 1.0])  # without h1 the set still recovers everything
    assert seq.verdict == "refuted"
    assert seq.checks["h1"].status == "refuted" and seq.checks["h1"].removal.cls == "removable"
    assert seq.rows_needed == []


def test_an_insufficient_circuit_is_refuted():
    rng = np.random.default_rng(2)
    seq, _ = run(rng, 0.6, [0.3])
    assert seq.verdict == "refuted" and seq.checks["sufficiency"].status == "refuted"


def test_a_source_that_runs_dry_leaves_it_undecided_with_what_it_would_need():
    rng = np.random.default_rng(3)
    seq, looks = run(rng, 1.0, [0.96], n0=100, cap=3200, limit=50)  # 0.96: just under 1.05, hard
    assert seq.verdict == "undecided"
    assert looks[-1].n == 150  # the test split and the 50 items the source still had
    assert seq.checks["h0"].status == "open" and seq.checks["h0"].n_needed and seq.checks["h0"].n_needed > 150


def test_fresh_generated_items_never_repeat_a_used_prompt_and_replay_the_same():
    used = ioi_task(seed=0, n=300).items

    def gen(seed, n):
        return ioi_task(seed=seed, n=n)
    a, b = FreshItems(used, generate=gen, seed=0), FreshItems(used, generate=gen, seed=0)
    first, second = a.take(400), a.take(400)
    keys = [item_key(it) for it in first + second]
    assert len(keys) == 800 and len(set(keys)) == 800
    assert not set(keys) & {item_key(it) for it in used}
    assert b.take(800) == first + second  # deterministic: a resumed certificate draws the same items


def test_a_generator_with_few_items_runs_dry():
    from kmshc.tasks.base import PairItem, Task
    pool = [PairItem(f"a{i}", f"b{i}") for i in range(30)]

    def gen(seed, n):
        return Task("small", "pairs", tuple(pool[(seed + j) % 30] for j in range(min(n, 30))))
    src = FreshItems(pool[:20], generate=gen, seed=0)
    got = src.take(100)
    assert sorted(it.good for it in got) == sorted(f"a{i}" for i in range(20, 30))


def test_a_data_files_fresh_items_are_the_ones_past_limit(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text("".join(f'{{"sentence_good": "The dog {i} runs.", "sentence_bad": "The dog {i} run."}}\n'
                            for i in range(50)))
    task = load_blimp_jsonl(str(path))
    splits = split_task(task, seed=4, limit=30)
    spare = unused_file_items(task, seed=4, limit=30)
    used = sum((s.items for s in splits.values()), ())
    assert len(spare) == 20 and not {item_key(i) for i in spare} & {item_key(i) for i in used}
    src = FreshItems(used, spare=spare)
    assert src.remaining == 20 and len(src.take(15)) == 15 and src.remaining == 5
    assert len(src.take(15)) == 5 and src.take(1) == ()
    assert unused_file_items(task, seed=4, limit=None) == ()


class Counting:
    def __init__(self):
        self.calls = 0

    def __call__(self, masks):
        self.calls += masks.shape[0]
        n = masks.shape[0]
        return type("O", (), {"margin": masks.reshape(n, -1).sum(1, keepdim=True).double().repeat(1, 3),
                              "correct": torch.ones(n, 3, dtype=torch.float64)})()


def test_scored_rounds_are_read_back_on_resume_instead_of_scored_again(tmp_path):
    masks = torch.eye(4).bool().reshape(4, 2, 2)
    first = Counting()
    out = ScoredRounds(tmp_path / "r.npz", resume=False).wrap(first, "r0:x")(masks)
    assert first.calls == 4
    again = Counting()
    store = ScoredRounds(tmp_path / "r.npz", resume=True)
    back = store.wrap(again, "r0:x")(masks[[2, 0]])
    assert again.calls == 0 and torch.equal(back.margin, out.margin[[2, 0]])
    store.wrap(again, "r1:y")(masks[:1])  # another round's items: scored anew
    assert again.calls == 1
    assert ScoredRounds(tmp_path / "r.npz", resume=False).store == {}  # no resume: start afresh


def test_placing_the_truth_on_a_boundary_sets_the_population_recovery_exactly():
    from kmshc.search.calibration import place_truth, population_recovery, resampled_verdicts
    rng = np.random.default_rng(5)
    pop = population(rng, 2000, 1.02, [0.8, 0.85])
    for row, r in (("circuit", 0.95), ("h1", 1.05)):
        moved = place_truth(pop, row, r)
        assert population_recovery(moved, row) == pytest.approx(r)
        assert np.allclose(np.diff(moved[row][0] - pop[row][0]), 0)  # a constant shift: the spread is kept
    as_is = resampled_verdicts(pop, ["h0", "h1"], n0=100, cap=1600, reps=100, epsilon=1.0, seed=1)
    edge = resampled_verdicts(place_truth(pop, "circuit", 0.95), ["h0", "h1"], n0=100, cap=1600, reps=100,
                              epsilon=1.0, seed=1)
    assert as_is["verified"] > 0.8 and edge["verified"] < 0.1 and as_is["items"] >= 100


def test_a_data_file_certificate_says_how_many_items_it_would_need_and_how_many_are_left():
    from types import SimpleNamespace

    from kmshc.search.rounds import file_note
    open_ = SimpleNamespace(verdict="undecided", n=400, n_needed=1300)
    assert file_note(open_, "blimp/x.jsonl", 0) == ("undecided after 400 items: about 1300 test items would likely "
                                                     "decide it; blimp/x.jsonl has 0 unused items left")
    assert "no number of items" in file_note(SimpleNamespace(verdict="undecided", n=400, n_needed=None), "f", 3)
    assert file_note(open_, None, None) is None  # a generator draws more: nothing to say
    assert file_note(SimpleNamespace(verdict="verified", n=400, n_needed=None), "f", 0) is None
    refuted = SimpleNamespace(verdict="refuted", n=640, n_needed=None)
    assert file_note(refuted, "f", 0) == ("refuted after 640 items; f has no unused items left to certify a "
                                          "repaired circuit on")
    assert file_note(refuted, "f", 3) is None and file_note(refuted, None, None) is None  # a repair can still draw


def test_a_data_file_whose_splits_use_every_item_gets_one_look_at_the_full_alpha(tmp_path):
    from kmshc import Circuit, Experiment, certify_circuit
    path = tmp_path / "p.jsonl"
    path.write_text("".join(f'{{"sentence_good": "The dog {i} runs.", "sentence_bad": "The dog {i} run."}}\n'
                            for i in range(40)))
    exp = Experiment(model="tiny-llama", task="blimp", data=str(path), ablation="zero")
    shape = exp.shape
    circ = Circuit(model="tiny-llama", task="blimp", heads=("L0H0", "L1H1"), n_heads_total=shape[0] * shape[1])
    cert = certify_circuit(exp, circ, metric="margin").certificate
    assert len(cert["rounds"]) == 1 and cert["rounds"][0]["alpha"] == pytest.approx(0.05)
    # a random tiny model has no gap: refuted, and the reason says so
    assert cert["verdict"] == "refuted" and cert["reasons"][0].startswith("no usable gap")


class _Recertifier:
    """The parts of a certifier that :func:`kmshc.search.repair.repair` reads besides ``certify``:
    no rounds to search again, and fresh items always available."""
    spent: list = []

    def can_certify_again(self) -> bool:
        return True


def test_repair_removes_the_most_removable_head_and_certifies_the_rest_on_fresh_items():
    from types import SimpleNamespace as NS

    from kmshc.search.repair import repair

    def removal(head, lower, cls):
        return NS(head=head, cls=cls, estimate=NS(lower=lower, recovery=lower + 0.05))
    refuted = NS(verdict="refuted", n=240, controls=[NS(verified=False)],
                 removals=[removal("A", 0.2, "necessary"), removal("B", 0.96, "removable"),
                           removal("C", 0.97, "removable")])
    asked = []

    class Certifier(_Recertifier):
        def certify(self, heads, **kw):
            asked.append((list(heads), kw))
            return NS(verdict="verified", n=480, controls=[], removals=[])
    heads, cert, steps = repair(Certifier(), ["A", "B", "C"], refuted, tries=3, epsilon=1.0)
    assert heads == ["A", "B"] and cert.verdict == "verified"
    assert asked == [(["A", "B"], {"epsilon": 1.0})]
    assert [s["removed"] for s in steps] == [["C"]] and steps[0]["items"] == 240
    # no tries, or a refutation that is not a removable head: nothing changes
    assert repair(Certifier(), ["A", "B", "C"], refuted, tries=0)[0] == ["A", "B", "C"]
    insufficient = NS(verdict="refuted", n=240, controls=[], removals=[removal("A", 0.2, "necessary")])
    assert repair(Certifier(), ["A"], insufficient, tries=3)[2] == []


def test_repair_keeps_the_refuted_certificate_when_the_data_file_has_no_items_left():
    from types import SimpleNamespace as NS

    from kmshc.search.repair import repair
    from kmshc.search.rounds import Certifier

    refuted = NS(verdict="refuted", n=240, controls=[NS(verified=False)],
                 removals=[NS(head="B", cls="removable", estimate=NS(lower=0.96, recovery=1.0))])
    asked = []

    class Dry(Certifier):
        def certify(self, heads, **kw):
            asked.append(list(heads))
            return NS(verdict="verified", n=480, controls=[], removals=[])
    dry = Dry(cfg=None, exp=None, store=None, scorers=[], _source=NS(remaining=0))
    assert not dry.can_certify_again()
    heads, cert, steps = repair(dry, ["A", "B"], refuted, tries=3)
    assert (heads, cert, steps, asked) == (["A", "B"], refuted, [], [])
    # items left, or a generator (remaining None): the repair goes ahead
    for source in (NS(remaining=5), NS(remaining=None)):
        wet = Dry(cfg=None, exp=None, store=None, scorers=[], _source=source)
        assert wet.can_certify_again() and repair(wet, ["A", "B"], refuted, tries=3)[0] == ["A"]


def _weighted_rounds(weights, sizes):
    """Rounds of outcome functions whose per-example margin is ``(1 + z_e)·Σ w_h·m_h``: every
    example agrees on each set's recovery, ``Σ_{h∈C} w_h / Σ w_h``."""
    from kmshc.search.rounds import Scored
    gen = torch.Generator().manual_seed(0)
    w = torch.tensor(weights)

    def chunk(n):
        z = 1 + 0.1 * torch.randn(n, generator=gen)

        def outcomes(masks):
            m = (masks.reshape(len(masks), -1) * w).sum(1, keepdim=True) * z
            return Scored(correct=(m > 0).double(), margin=m.double())
        return outcomes
    return [chunk(n) for n in sizes]


def _search_cfg():
    from types import SimpleNamespace as NS
    return NS(metric="margin", bar=0.975, decision_confidence=0.9, spending_power=1.0, search_margin=0.0)


def test_a_repair_searches_the_certificates_items_and_removes_every_head_that_overshoots():
    """Oracle: recoveries C = 1.15; C minus L0H0 / L0H1 = 0.55 / 0.7; minus L0H2 or L0H3 = 1.1,
    minus both = 1.05 (L0H4 is off). One repair removes both overshooting heads, where removing
    the most removable head alone would need a second certificate."""
    from types import SimpleNamespace as NS

    from kmshc.search.repair import removed_heads, repair, search_on_spent_items
    from kmshc.search.certificate import Estimate, Removal
    spent = _weighted_rounds([0.6, 0.45, 0.05, 0.05, -0.15], [60, 60, 120])
    est = lambda r: Estimate(r, 1.0, recovery=r, lower=r - 0.01, upper=r + 0.01)  # noqa: E731
    removals = [Removal("L0H0", est(0.55), 0.6, 0.0, 0.0, "necessary"),
                Removal("L0H1", est(0.7), 0.45, 0.0, 0.0, "necessary"),
                Removal("L0H2", est(1.1), 0.05, 0.0, 0.0, "removable"),
                Removal("L0H3", est(1.1), 0.05, 0.0, 0.0, "removable")]
    start = ["L0H0", "L0H1", "L0H2", "L0H3"]
    heads, evaluations = search_on_spent_items(spent, (1, 5), start, removals, cfg=_search_cfg())
    assert heads == ["L0H0", "L0H1"] and evaluations > 0
    asked = []

    class Certifier(_Recertifier):
        def __init__(self):
            self.spent = spent

        def certify(self, heads, **kw):
            asked.append(list(heads))
            return NS(verdict="verified", n=480, controls=[], removals=[])
    refuted = NS(verdict="refuted", n=240, controls=[], removals=removals)
    heads, cert, steps = repair(Certifier(), start, refuted, tries=3, shape=(1, 5), cfg=_search_cfg())
    assert heads == ["L0H0", "L0H1"] and asked == [["L0H0", "L0H1"]] and cert.verdict == "verified"
    assert steps[0]["removed"] == ["L0H2", "L0H3"] and "search" in steps[0]["because"]
    assert removed_heads(steps + [{"removed": "L0H9"}]) == ["L0H2", "L0H3", "L0H9"]  # older records: one name
    # paper semantics or a complement baseline: not in the search's recovery units, so one head goes
    for kw in ({"semantics": "paper"}, {"baseline_heads": ["L0H4"]}):
        assert repair(Certifier(), start, refuted, tries=1, shape=(1, 5), cfg=_search_cfg(), **kw)[2][0]["removed"] == ["L0H3"]


def test_a_repair_whose_search_keeps_everything_removes_the_most_removable_head():
    """Removing L0H2 keeps 0.96: the certificate's bar (0.95) calls it removable, the search's
    (0.975) does not, so the repair falls back to the one head."""
    from types import SimpleNamespace as NS

    from kmshc.search.repair import repair
    from kmshc.search.certificate import Estimate, Removal
    spent = _weighted_rounds([0.6, 0.36, 0.04, 0.0], [60, 60, 120])
    removals = [Removal("L0H2", Estimate(0.96, 1.0, recovery=0.96, lower=0.955, upper=0.965), 0.04, 0, 0, "removable")]

    class Certifier(_Recertifier):
        def __init__(self):
            self.spent = spent

        def certify(self, heads, **kw):
            return NS(verdict="verified", n=480, controls=[], removals=[])
    refuted = NS(verdict="refuted", n=240, controls=[], removals=removals)
    heads, _, steps = repair(Certifier(), ["L0H0", "L0H1", "L0H2"], refuted, tries=3, shape=(1, 4), cfg=_search_cfg())
    assert heads == ["L0H0", "L0H1"] and steps[0]["evaluations"] > 0 and "lower bound" in steps[0]["because"]


def test_the_epsilon_range_is_empty_when_every_removal_sits_above_one():
    """A circuit whose heads' removals all exceed the full model leaves no target in (0, 1]."""
    from kmshc.search.checks import Checks
    from kmshc.search.certificate import Estimate, Removal
    chk = Checks(np.ones(3), np.zeros(3), 1.0, CFG)
    circ = Estimate(1.2, 1.0, recovery=1.2, lower=0.98, upper=1.3)  # LB + tau = 1.03 > 1
    rem = [Removal("h", Estimate(1.1, 1.0, recovery=1.1, lower=1.02, upper=1.06), 0.1, 0.0, 0.0, "necessary")]
    assert chk.epsilon_range(circ, rem) is None  # lo = 1.01 is past the largest target, 1.0
    rem_ok = [Removal("h", Estimate(0.8, 1.0, recovery=0.8, lower=0.7, upper=0.9), 0.4, 0.0, 0.0, "necessary")]
    assert chk.epsilon_range(circ, rem_ok) == [0.85, 1.0]
