"""bench/search_cost.py: the cost table's arithmetic and what it reads from run files (no model)."""
from __future__ import annotations

import json

from pathlib import Path

import pytest

from kmshc.search.certificate import Certificate, Estimate
from kmshc.types import Circuit, KmshcError, atomic_write_json

from bench_loader import load_bench

sc = load_bench("search_cost")


def route(name: str, *, search: float, size: int = 3, verified: bool | None = True, adaptive: bool = False,
          training: float | None = None, ranking: float | None = None):
    return sc.Route(name=name, search=search, certificate=50.0, evaluations=10, wall_s=1.0, size=size,
                    verified=verified, recovery=0.9, adaptive=adaptive, training=training, ranking=ranking)


def test_total_adds_training_or_ranking_to_the_search_but_not_the_certificate():
    assert route("x", search=300.0, training=2400.0).total == 2700.0
    assert route("y", search=100.0, ranking=1200.0).total == 1300.0


def test_ratios_compare_fixed_with_adaptive_and_attribution_with_the_learned_route_of_its_decisions():
    fixed = route(sc.FIXED, search=1200.0, training=2000.0)
    adaptive = route(sc.ADAPTIVE, search=300.0, training=2000.0, adaptive=True)
    att = route(sc.ATTRIBUTION, search=250.0, ranking=800.0, adaptive=True)
    r = sc.ratios({sc.FIXED: fixed, sc.ADAPTIVE: adaptive, sc.ATTRIBUTION: att})
    assert r.search_saving == pytest.approx(4.0)
    assert r.attribution_share == pytest.approx(1050.0 / 2300.0)  # against learned + adaptive, not fixed-n
    fixed_att = route(sc.ATTRIBUTION, search=900.0, ranking=800.0)
    r = sc.ratios({sc.FIXED: fixed, sc.ATTRIBUTION: fixed_att})
    assert r.search_saving is None and r.attribution_share == pytest.approx(1700.0 / 3200.0)


def test_verdicts_need_the_saving_a_circuit_no_larger_and_verification():
    fixed = route(sc.FIXED, search=1200.0, training=2000.0)
    good = {sc.FIXED: fixed, sc.ADAPTIVE: route(sc.ADAPTIVE, search=300.0, training=2000.0, adaptive=True)}
    assert sc.verdicts(good, sc.ratios(good))[0].endswith(": met")
    for bad in (route(sc.ADAPTIVE, search=500.0, adaptive=True),             # 2.4x: too little saving
                route(sc.ADAPTIVE, search=300.0, size=4, adaptive=True),     # a larger circuit
                route(sc.ADAPTIVE, search=300.0, verified=False, adaptive=True)):
        routes = {sc.FIXED: fixed, sc.ADAPTIVE: bad}
        assert sc.verdicts(routes, sc.ratios(routes))[0].endswith(": missed")
    att = {sc.FIXED: fixed, sc.ATTRIBUTION: route(sc.ATTRIBUTION, search=700.0, ranking=900.0)}
    assert sc.verdicts(att, sc.ratios(att))[-1].endswith(": met")  # 1600 / 3200 = 0.5
    att[sc.ATTRIBUTION] = route(sc.ATTRIBUTION, search=800.0, ranking=900.0)
    assert sc.verdicts(att, sc.ratios(att))[-1].endswith(": missed")


def certificate(verified: bool, recovery: float) -> dict:
    e = Estimate(value=1.0, accuracy=0.9, recovery=recovery, lower=recovery - 0.1, upper=recovery + 0.1)
    return Certificate(split="test", n=40, metric="margin", confidence=0.95, epsilon=0.9, tau=0.05, semantics="keep",
                       K=1, full=e, baseline=e, circuit=e, threshold=0.9, gap_accuracy_lower=0.3, usable_gap=True,
                       removals=[], epsilon_range=None, knockout=None, controls=[], verified=verified,
                       failing_heads=[], reasons=[]).to_dict()


def write_runs(root: Path, *, fixed: float, adaptive: float, att: float) -> list[Path]:
    """A training run with its fixed-n search, an adaptive search and an attribution run, as files."""
    learned, ad, at = root / "l", root / "a", root / "r"
    Circuit(model="m", task="t", heads=("L0H0", "L0H1", "L1H2"), n_heads_total=8, example_forwards=2000.0,
            extra={"wall_time_s": 20.0}).save(learned / sc.LEARNED)
    for d, forwards, heads, adapt in ((learned, fixed, ["L0H0", "L1H2"], False), (ad, adaptive, ["L1H2"], True),
                                      (at, att, ["L1H2"], True)):
        Circuit(model="m", task="t", heads=tuple(heads), n_heads_total=8, example_forwards=forwards, evaluations=7,
                certificate=certificate(True, 0.95), config={"search": {"adaptive": adapt}},
                extra={"wall_time_s": 5.0, "verify_cost": {"example_forwards": 60.0, "forward": 60.0}}
                ).save(d / sc.SEARCHED)
    atomic_write_json(at / "gates.json", {"method": "attribution", "n": 100, "start_rule": {"size": 2},
                                          "cost": {"example_forwards": 200.0, "forward": 100.0, "backward": 100.0},
                                          "wall_time_s": 3.0, "heads": {}})
    return [learned, ad, at]


def test_routes_are_read_from_circuit_and_rank_files(tmp_path):
    routes, circuits, notes = sc.read_routes(*write_runs(tmp_path, fixed=900.0, adaptive=150.0, att=100.0))
    assert not notes and set(circuits) == {sc.FIXED, sc.ADAPTIVE, sc.ATTRIBUTION}
    f, a, t = routes[sc.FIXED], routes[sc.ADAPTIVE], routes[sc.ATTRIBUTION]
    assert (f.training, f.search, f.certificate, f.size, f.wall_s) == (2000.0, 900.0, 60.0, 2, 25.0)
    assert a.adaptive and a.total == 2150.0 and a.recovery == 0.95 and a.verified is True
    assert (t.training, t.ranking, t.total, t.wall_s) == (None, 200.0, 300.0, 8.0)
    r = sc.ratios(routes)
    assert r.search_saving == 6.0 and r.attribution_share == pytest.approx(300.0 / 2150.0)
    assert sc.rows(routes, r)[2][0] == "attribution + search"


def test_the_attribution_row_names_an_integrated_gradients_ranking(tmp_path):
    runs = write_runs(tmp_path, fixed=900.0, adaptive=150.0, att=100.0)
    gates = runs[2] / "gates.json"
    atomic_write_json(gates, {**json.loads(gates.read_text()), "method": "integrated_gradients", "steps": 5})
    routes, _, _ = sc.read_routes(*runs)
    assert sc.rows(routes, sc.ratios(routes))[2][0] == "integrated gradients (5 steps) + search"
    atomic_write_json(gates, {**json.loads(gates.read_text()), "method": "forward_selection", "steps": 4})
    routes, _, _ = sc.read_routes(*runs)
    assert sc.rows(routes, sc.ratios(routes))[2][0] == "forward selection (4 rounds) + search"


def test_a_missing_route_is_noted_and_a_route_without_costs_is_refused(tmp_path):
    learned, ad, at = write_runs(tmp_path, fixed=900.0, adaptive=150.0, att=100.0)
    (ad / sc.SEARCHED).unlink()
    routes, _, notes = sc.read_routes(learned, ad, at)
    assert sc.ADAPTIVE not in routes and len(notes) == 1 and str(ad / sc.SEARCHED) in notes[0]
    Circuit(model="m", task="t", heads=("L0H0",), n_heads_total=8).save(learned / sc.SEARCHED)
    with pytest.raises(KmshcError, match="example_forwards"):
        sc.read_routes(learned, ad, at)
