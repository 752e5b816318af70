"""One default per concept: the API, the command-line parsers and the configs agree with its owner.

The owners: :class:`~kmshc.experiment.Experiment` for the ablation,
:class:`~kmshc.search.config.SearchConfig` for the metric, and
:class:`~kmshc.search.settings.SearchSettings` for epsilon, the gate threshold and the
adaptive decisions' spending power; :class:`~kmshc.search.certificate.CertificateConfig` owns the
certificate's tolerance ``tau``, a different concept under a different name.
"""
from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import yaml

import kmshc
from kmshc.cli import build_parser
from kmshc.entry.search import parse as parse_search
from kmshc.experiment import Experiment
from kmshc.train.module import GateModule
from kmshc.engine.scoring import Scorer
from kmshc.search.config import SearchConfig, legacy_fields, settings_of
from kmshc.search.settings import SearchSettings
from kmshc.types import Circuit

REPO = Path(__file__).resolve().parents[1]
OWNERS = {"ablation": Experiment.ablation, "metric": SearchConfig.metric, "epsilon": SearchSettings.epsilon,
          "gate_threshold": SearchSettings.gate_threshold, "spending_power": SearchSettings.spending_power}


def _default(fn, name: str):
    return inspect.signature(fn).parameters[name].default


def test_the_api_reads_each_default_from_its_owner():
    assert _default(kmshc.certify_circuit, "metric") == OWNERS["metric"]
    assert _default(Scorer, "ablation") == OWNERS["ablation"]
    assert _default(GateModule, "epsilon") == OWNERS["epsilon"]
    assert (Circuit.ablation, Circuit.epsilon) == (OWNERS["ablation"], OWNERS["epsilon"])
    assert _default(GateModule, "gate_threshold") == OWNERS["gate_threshold"]
    assert kmshc.LearnedGates.gate_threshold == OWNERS["gate_threshold"]


def test_every_reader_of_the_search_defaults_reads_the_owner():
    from kmshc.rank.forward_selection import forward_selection
    from kmshc.rank.run import RankSettings
    from kmshc.search.decide import RecoveryScores, spending
    from kmshc.search.refine import refine
    from kmshc.train.plots import gate_heatmap
    assert _default(refine, "gate_threshold") == _default(gate_heatmap, "threshold") == OWNERS["gate_threshold"]
    assert RankSettings.target == _default(forward_selection, "target") == OWNERS["epsilon"]
    assert _default(spending, "power") == _default(RecoveryScores, "spending_power") == OWNERS["spending_power"]
    assert SearchConfig.spending_power == OWNERS["spending_power"]
    assert "tau" not in SearchSettings.__dataclass_fields__  # tau names the certificate's tolerance only


def test_only_heads_takes_no_default_ablation():
    # only_heads cannot compute the default mean ablation's values, so it takes no default at all
    assert _default(kmshc.only_heads, "ablation") is inspect.Parameter.empty


def _flag_default(verb: str, dest: str):
    sub = next(a for a in build_parser()._actions if a.dest == "command").choices[verb]
    return next(a.default for a in sub._actions if a.dest == dest)


@pytest.mark.parametrize("verb", ["score", "rank"])
def test_the_cli_verbs_default_to_the_owners_ablation(verb):
    assert _flag_default(verb, "ablation") == OWNERS["ablation"]


def test_the_search_parser_defaults_to_the_owners():
    cfg = parse_search([])
    assert (cfg.experiment.ablation, cfg.metric, cfg.epsilon) == (OWNERS["ablation"], OWNERS["metric"],
                                                                  OWNERS["epsilon"])
    assert (cfg.gate_threshold, cfg.spending_power) == (OWNERS["gate_threshold"], OWNERS["spending_power"])


def test_a_config_or_flag_that_says_tau_sets_the_gate_threshold(tmp_path):
    old = tmp_path / "old.yaml"
    old.write_text("tau: 0.3\n")
    assert parse_search(["--config", str(old)]).gate_threshold == 0.3
    assert parse_search(["--tau", "0.4"]).gate_threshold == 0.4
    recorded = Circuit(model="m", task="t", heads=(), n_heads_total=4, config={"search": {"tau": 0.2, "N": 3}})
    assert settings_of(recorded)["gate_threshold"] == 0.2 and "tau" not in settings_of(recorded)
    assert legacy_fields({"tau": 0.2, "certificate": {"tau": 0.05}}) == {"gate_threshold": 0.2,
                                                                       "certificate": {"tau": 0.05}}


@pytest.mark.parametrize("path", sorted(REPO.glob("configs/search/*.yaml")), ids=lambda p: p.name)
def test_a_search_config_that_leaves_a_field_out_gets_the_owners_default(path):
    written = yaml.safe_load(path.read_text(encoding="utf-8"))
    cfg = parse_search(["--config", str(path)])
    got = {"ablation": cfg.experiment.ablation, "metric": cfg.metric, "epsilon": cfg.epsilon,
           "gate_threshold": cfg.gate_threshold, "spending_power": cfg.spending_power}
    set_here = {"ablation": "ablation" in (written.get("experiment") or {}),
                **{key: key in written for key in got if key != "ablation"}}
    for key, value in got.items():
        if not set_here[key]:
            assert value == OWNERS[key], f"{path.name}: {key} is {value!r}, its owner's default {OWNERS[key]!r}"
