"""One default per concept: the API, the command-line parsers and the configs agree with its owner.

The owners: :class:`~kmshc.experiment.Experiment` for the ablation, and
:class:`~kmshc.search.config.SearchConfig` for the metric and epsilon.
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
from kmshc.search.config import SearchConfig
from kmshc.types import Circuit

REPO = Path(__file__).resolve().parents[1]
OWNERS = {"ablation": Experiment.ablation, "metric": SearchConfig.metric, "epsilon": SearchConfig.epsilon}


def _default(fn, name: str):
    return inspect.signature(fn).parameters[name].default


def test_the_api_reads_each_default_from_its_owner():
    assert _default(kmshc.certify_circuit, "metric") == OWNERS["metric"]
    assert _default(Scorer, "ablation") == OWNERS["ablation"]
    assert _default(GateModule, "epsilon") == OWNERS["epsilon"]
    assert (Circuit.ablation, Circuit.epsilon) == (OWNERS["ablation"], OWNERS["epsilon"])
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


@pytest.mark.parametrize("path", sorted(REPO.glob("configs/search/*.yaml")), ids=lambda p: p.name)
def test_a_search_config_that_leaves_a_field_out_gets_the_owners_default(path):
    written = yaml.safe_load(path.read_text(encoding="utf-8"))
    cfg = parse_search(["--config", str(path)])
    got = {"ablation": cfg.experiment.ablation, "metric": cfg.metric, "epsilon": cfg.epsilon}
    set_here = {"ablation": "ablation" in (written.get("experiment") or {}), "metric": "metric" in written,
                "epsilon": "epsilon" in written}
    for key, value in got.items():
        if not set_here[key]:
            assert value == OWNERS[key], f"{path.name}: {key} is {value!r}, its owner's default {OWNERS[key]!r}"
