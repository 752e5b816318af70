"""The steps of ``bench/rankers.py``: one experiment per (task, seed), each ranking's run folder,
its faithfulness curves, and a warm search from it. Every step writes one JSON atomically and is
skipped when that JSON exists (a changed curve grid or item count rescores the curves only).

Layout under ``--out``: ``<task>/s<seed>/baseline.json`` (``S(M)``, ``S(∅)`` per ablation),
``<task>/s<seed>/<ranking>.json`` (the ranking, its cost, its curves), ``<task>/s0/<ranking>.search.json``
(the warm search), ``<task>/s<seed>/runs/<ranking>/`` (the ``gates.json`` run folders the searches
start from) and ``*.log`` (the output of each ``train.py`` / ``search.py`` run).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from common import BLIMP, ROOT, run_entry

from kmshc.compare.curves import complete_ranking, random_ranking, sizes
from kmshc.compare.experiment_curves import endpoint_scores, ranking_curve
from kmshc.engine.cost import CostRecord
from kmshc.experiment import Experiment
from kmshc.rank.run import RankSettings, gates_record, rank
from kmshc.search.gates_file import load_gates, read_gates, write_gates
from kmshc.toy.ground_truth import Reference, agreement
from kmshc.types import KmshcError, atomic_write_json, read_circuit

SPLITS = [0.2, 0.4, 0.4]  # the analysis grid's train / val (the search) / test (curves, certificate)
ITEMS = 600               # per SmolLM2 task: 120 / 240 / 240, the main job's sizes (det-noun: limit 600 of 1000)
DERIVATIVE = ("attribution", "integrated_gradients", "forward_selection")  # kmshc rank's methods
TRAINING_FREE = (*DERIVATIVE, "chg")  # candidates for "the best training-free ranking" (random is the floor)
RANKINGS = ("gates", *TRAINING_FREE, "random")
SMALL_MODEL = 32          # at most this many heads: every curve size is cheap, so the default grid is used
DEFAULT_KS = (0.02, 0.05, 0.15, 0.4)  # fractions of the heads for larger models (plus 0 and all)


@dataclass(frozen=True)
class TaskSpec:
    """A task of the benchmark: the train config whose settings (today's defaults for it) train its
    gates and whose ``data.experiment`` is the experiment, the fields set over it, the search config."""

    train_config: str
    search_config: str
    overrides: dict[str, Any]
    toy: bool = False


TASKS = {
    "ioi": TaskSpec("default", "default", {"task": "ioi", "n": ITEMS, "split_fractions": SPLITS}),
    "greater_than": TaskSpec("default", "default", {"task": "greater_than", "n": ITEMS, "split_fractions": SPLITS}),
    "induction": TaskSpec("induction", "induction", {"task": "induction", "n": ITEMS, "split_fractions": SPLITS}),
    "det_noun": TaskSpec("blimp", "default", {"data": BLIMP.format("determiner_noun_agreement_1"), "limit": ITEMS,
                                              "split_fractions": SPLITS}),
    "toy": TaskSpec("toy", "toy", {}, toy=True),
}


@dataclass(frozen=True)
class Options:
    """The bench's settings shared by every step (see ``bench/rankers.py --help``)."""

    out: Path
    model: str | None = None
    items: int | None = None
    ks: tuple[int | float, ...] | None = None
    curve_items: int | None = 80
    train_args: tuple[str, ...] = ()
    search_args: tuple[str, ...] = ()
    variants: dict[str, tuple[str, ...]] = field(default_factory=dict)


class Skip(Exception):
    """A ranking that cannot run here (e.g. CHG without its package); the message says why."""


@dataclass
class Cell:
    """One (task, seed): its folder, its experiment (the model loads on first use) and the toy's reference."""

    task: str
    spec: TaskSpec
    seed: int
    dir: Path
    fields: dict[str, Any]
    exp: Experiment
    opts: Options
    reference: Reference | None = None
    _ablated: dict[str, Experiment] = field(default_factory=dict)

    def run(self, name: str) -> Path:
        return self.dir / "runs" / name

    def step(self, name: str) -> Path:
        return self.dir / f"{name}.json"

    def under(self, ablation: str) -> Experiment:
        """The experiment under ``ablation``, sharing the loaded model."""
        if ablation == self.exp.ablation:
            return self.exp
        return self._ablated.setdefault(ablation, self.exp.with_ablation(ablation))


def make_cell(task: str, seed: int, opts: Options, toy_model: Path | None = None,
              reference: Reference | None = None) -> Cell:
    spec = TASKS[task]
    fields = {**spec.overrides, "seed": seed}
    if spec.toy:
        fields["model"] = str(toy_model)
    elif opts.model:
        fields["model"] = opts.model
    if opts.items:
        fields["limit" if "data" in fields else "n"] = opts.items
    base = yaml.safe_load((ROOT / "configs" / "train" / f"{spec.train_config}.yaml").read_text())["data"]["experiment"]
    return Cell(task, spec, seed, opts.out / task / f"s{seed}", fields, Experiment(**{**base, **fields}), opts,
                reference)


def read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


# ---------------------------------------------------------------------------- S(M) and S(∅)
def baseline(cell: Cell) -> dict:
    """``S(M)`` and ``S(∅)`` on the curves' test items, under the experiment's ablation and, where the
    task has counterfactuals that fit the tokenizer, under counterfactual ablation; notes say why not."""
    path = cell.dir / "baseline.json"
    old, exp = read_json(path), json.loads(json.dumps(cell.exp.result_dict()))
    if old is not None and old["experiment"] != exp:
        raise KmshcError(f"{path}: made for another experiment than this command's ({old['experiment']} against "
                         f"{exp}); use another --out, or delete {cell.dir} to start this (task, seed) again")
    if old is not None and old["items"] == cell.opts.curve_items:
        return old
    ablations, notes = {}, {}
    candidates = [cell.exp.ablation]
    if cell.exp.ablation != "counterfactual":
        if cell.exp.splits["train"].has_counterfactuals:
            candidates.append("counterfactual")
        else:
            notes["counterfactual"] = f"task {cell.exp.task_name!r} has no counterfactuals"
    for ab in candidates:
        try:
            full, empty = endpoint_scores(cell.under(ab), items=cell.opts.curve_items)
        except KmshcError as e:
            notes[ab] = str(e)
            continue
        if abs(full - empty) < 1e-12:
            notes[ab] = f"S(M) = S(∅) = {full:.4f}: no gap to normalise by"
            continue
        ablations[ab] = [full, empty]
    n_layers, n_heads = cell.exp.shape
    rec = {"items": cell.opts.curve_items, "test_items": len(cell.exp.splits["test"]), "n_layers": n_layers,
           "n_heads": n_heads, "ablations": ablations, "notes": notes, "experiment": exp}
    atomic_write_json(path, rec)
    return rec


def curve_sizes(opts: Options, base: dict) -> list[int]:
    n = base["n_layers"] * base["n_heads"]
    if opts.ks is not None:
        return sizes(n, opts.ks)
    return sizes(n, None if n <= SMALL_MODEL else DEFAULT_KS)


# ---------------------------------------------------------------------------- making a ranking
def train_gates(cell: Cell, name: str) -> None:
    """``train.py`` with the task's train config over the cell's experiment (skipped when done); the
    run's experiment must be the cell's, so that every ranking shares its splits."""
    run = cell.run(name)
    if not (run / "circuit_learned.json").is_file():
        flags = [x for k, v in cell.fields.items()
                 for x in (f"--data.experiment.{k}", json.dumps(v) if isinstance(v, (list, dict)) else str(v))]
        run_entry(["train.py", "fit", "--config", f"configs/train/{cell.spec.train_config}.yaml",
                   "--runs_dir", str(run.parent), "--name", name, "--overwrite", "--log_to", "csv",
                   "--score_splits", "[]", "--seed_everything", str(cell.seed), *flags, *cell.opts.train_args,
                   *cell.opts.variants.get(name, ())], cell.dir / f"{name}.train.log")
    trained = read_gates(run)[0]
    if trained.result_dict() != cell.exp.result_dict():
        raise KmshcError(f"{run}: trained on another experiment than the bench's\n{trained.result_dict()}\n"
                         f"{cell.exp.result_dict()}")


def rank_heads(cell: Cell, method: str) -> None:
    """``kmshc rank --method <method>`` in this process (the model stays loaded), on the train split."""
    run = cell.run(method)
    if (run / "gates.json").is_file():
        return
    t0 = time.perf_counter()
    result, start, rule = rank(cell.exp.scorer_for("train"), "train", RankSettings(method=method))
    write_gates(run, gates_record(cell.exp, result, start, rule, time.perf_counter() - t0))


def from_run(run: Path) -> dict:
    """A run folder's ranking, its own set and what it cost. The ranking is every head by ``log_alpha``,
    highest first; forward selection's heads come first in the order it added them (its ``log_alpha``,
    the derivative at the final set, orders the rest)."""
    d, path = load_gates(run, "the ranking's run did not finish")
    log_alpha = {h: v["log_alpha"] for h, v in d["heads"].items()}
    # a learned run's path order, or forward selection's heads in the order it added them
    first = d.get("order") or (d.get("start_rule") or {}).get("order", [])
    order = complete_ranking(first, d["n_layers"], d["n_heads"], rest_order=log_alpha)
    learned = run / "circuit_learned.json"
    if learned.is_file():
        circ = read_circuit(learned)
        start, forwards, wall = list(circ.heads), circ.example_forwards, circ.extra.get("wall_time_s")
    else:
        start = sorted(h for h, v in d["heads"].items() if v["gate"] >= d["gate_threshold"])
        forwards = CostRecord.from_dict(d.get("cost"), where=f"{path}: field 'cost'").example_forwards
        wall = d.get("wall_time_s")
    return {"order": order, "start": start, "example_forwards": forwards, "wall_s": wall, "run": str(run)}


def make_ranking(cell: Cell, name: str) -> dict:
    """Produce ``name``'s ranking (its run folder first, where it has one)."""
    if name == "random":
        return {"order": random_ranking(*cell.exp.shape, cell.seed), "start": None, "example_forwards": 0.0,
                "wall_s": 0.0, "run": None}
    if name == "gates" or name in cell.opts.variants:
        train_gates(cell, name)
    elif name in DERIVATIVE:
        rank_heads(cell, name)
    elif name == "chg":
        from rankers_chg import chg_run
        if not (cell.run(name) / "gates.json").is_file():
            chg_run(cell.exp, cell.run(name), cell.seed)
    else:
        raise KmshcError(f"unknown ranking {name!r}")
    return from_run(cell.run(name))


# ---------------------------------------------------------------------------- one ranking's step
def toy_scores(heads, ref: Reference) -> dict:
    a = agreement(heads, ref)
    return {"precision": a.precision, "recall": a.recall, "mechanism": a.has_mechanism, "heads": sorted(heads)}


def ranking_step(cell: Cell, name: str, base: dict) -> dict:
    """The ranking, its cost and its curves (skipped when done with the same curve sizes and items)."""
    ks = curve_sizes(cell.opts, base)
    key = {"ks": ks, "items": cell.opts.curve_items, "ablations": sorted(base["ablations"])}
    old = read_json(cell.step(name))
    if old is not None and old.get("scoring") == key:
        return {**old, "skipped": True}
    t0 = time.perf_counter()
    rec = old or {"task": cell.task, "seed": cell.seed, "ranking": name, **make_ranking(cell, name)}
    rec["curves"] = {ab: ranking_curve(cell.under(ab), rec["order"], ks, label=name, items=cell.opts.curve_items,
                                       endpoints=tuple(ends)).to_dict()
                     for ab, ends in base["ablations"].items()}
    if cell.reference is not None:
        ref = cell.reference
        rec["toy"] = {"reference": list(ref.heads), "top": toy_scores(rec["order"][:len(ref.heads)], ref),
                      "start": toy_scores(rec["start"], ref) if rec["start"] else None}
    rec["scoring"], rec["step_wall_s"] = key, round(time.perf_counter() - t0, 2)
    atomic_write_json(cell.step(name), rec)
    return rec


def search_step(cell: Cell, name: str) -> dict:
    """A warm search from ``name``'s run folder through to its certificate (skipped when done)."""
    path = cell.dir / f"{name}.search.json"
    if (old := read_json(path)) is not None:
        return {**old, "skipped": True}
    run = cell.run(name)
    circuit = run / "circuit_searched.json"
    if not circuit.is_file():
        resume = "true" if (run / "search_state.json").is_file() else "false"
        run_entry(["search.py", "--config", f"configs/search/{cell.spec.search_config}.yaml", "--mode", "warm",
                   "--from_run", str(run), "--progress", "false", "--resume", resume, *cell.opts.search_args],
                  cell.dir / f"{name}.search.log")
    circ = read_circuit(circuit)
    cert = circ.certificate or {}
    rec = {"task": cell.task, "seed": cell.seed, "ranking": name, "heads": list(circ.heads), "size": len(circ.heads),
           "evaluations": circ.evaluations, "example_forwards": circ.example_forwards,
           "certificate_forwards": (circ.extra.get("verify_cost") or {}).get("example_forwards"),
           "verdict": cert.get("verdict"), "capped": bool(circ.extra.get("capped")),
           "wall_s": circ.extra.get("wall_time_s"), "circuit": str(circuit)}
    if cell.reference is not None:
        rec["toy"] = toy_scores(circ.heads, cell.reference)
    atomic_write_json(path, rec)
    return rec
