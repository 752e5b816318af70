"""Property-based fuzzing of everything that reads user files or user configs.

Random bytes and random JSON structures must give either a valid result or a clean
:class:`~kmshc.types.KmshcError` whose message names the file (or field): never another
exception, a crash or a hang. Valid input must round-trip exactly, so the guards cannot
simply reject everything. Sized to run in a few seconds (``max_examples``).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from kmshc.experiment import Experiment
from kmshc.tasks import load_blimp_jsonl, load_label_jsonl
from kmshc.types import CIRCUIT_FIELDS, Circuit, KmshcError, read_circuit

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
json_values = st.recursive(json_scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c,
                                                                                                max_size=4),
                           max_leaves=8)
# Byte strings that stress the parsers: JSON punctuation, BOMs, invalid UTF-8, U+2028, huge numbers.
nasty_bytes = st.lists(st.sampled_from([b"{", b"}", b"[", b"]", b'"', b":", b",", b"\n", b"\r", b"\xef\xbb\xbf",
                                        b"\xff", b"\xc3", b"\xe2\x80\xa8", b"NaN", b"1" * 5000, b"[" * 3000,
                                        b'"sentence_good"', b'"sentence_bad"', b'"heads"', b"null", b" "]),
                       max_size=30).map(b"".join)
any_bytes = st.binary(max_size=400) | nasty_bytes


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def _write(d: Path, name: str, data: bytes) -> Path:
    path = d / name
    path.write_bytes(data)
    return path


def _clean_or_result(fn, path: Path):
    """Call ``fn(path)``; a KmshcError must name the file. Anything else propagates and fails the test."""
    try:
        return fn(path)
    except KmshcError as e:
        assert str(path) in str(e), f"error does not name the file: {e}"
        return None


# ----------------------------------------------------------------------------- jsonl loaders
pair_records = st.fixed_dictionaries({}, optional={"sentence_good": json_values, "sentence_bad": json_values,
                                                   "extra": json_values})
jsonl_lines = st.lists(st.one_of(pair_records.map(json.dumps), json_values.map(json.dumps), st.text(max_size=30)),
                       max_size=6).map(lambda ls: "\n".join(ls).encode("utf-8", "surrogatepass"))


@FUZZ
@given(data=any_bytes | jsonl_lines)
def test_blimp_loader_never_crashes(fuzz_dir, data):
    task = _clean_or_result(load_blimp_jsonl, _write(fuzz_dir, "pairs.jsonl", data))
    if task is not None:
        assert len(task) > 0 and all(isinstance(it.good, str) and it.good != it.bad for it in task.items)


label_records = st.fixed_dictionaries({}, optional={"prompt": json_values, "label": json_values | st.sampled_from(
    [" True", " False"])})


@FUZZ
@given(data=any_bytes | st.lists(label_records.map(json.dumps), max_size=5).map(lambda ls: "\n".join(ls).encode()),
       labels=st.sampled_from([[" True", " False"], [" A", " B", " C"]]) | st.lists(st.text(max_size=5), max_size=3))
def test_label_loader_never_crashes(fuzz_dir, data, labels):
    path = _write(fuzz_dir, "labels.jsonl", data)
    try:
        task = load_label_jsonl(path, labels)
    except KmshcError as e:  # label-list problems name the labels, file problems name the file
        assert str(path) in str(e) or "label" in str(e)
        return
    assert all(0 <= it.label < len(labels) for it in task.items)


sentences = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=20).filter(str.strip)


@FUZZ
@given(pairs=st.lists(st.tuples(sentences, sentences).filter(lambda p: p[0] != p[1]), min_size=1, max_size=8),
       bom=st.booleans(), crlf=st.booleans())
def test_valid_jsonl_round_trips(fuzz_dir, pairs, bom, crlf):
    """Any non-empty distinct strings (U+2028, quotes, emoji...) load back exactly, one item per line."""
    nl = "\r\n" if crlf else "\n"
    text = nl.join(json.dumps({"sentence_good": g, "sentence_bad": b}, ensure_ascii=False) for g, b in pairs)
    task = load_blimp_jsonl(_write(fuzz_dir, "ok.jsonl", (b"\xef\xbb\xbf" if bom else b"") + text.encode()))
    assert [(it.good, it.bad) for it in task.items] == pairs


# ----------------------------------------------------------------------------- circuit reader
def _valid_circuit() -> dict:
    return Circuit(model="tiny-gpt2", task="grammar", heads=("L0H1", "L1H3"), n_heads_total=8,
                   epsilon=0.9, scores={"val": {"accuracy": 0.9}}, config={"experiment": Experiment().to_dict()},
                   extra={"method": "learned"}).to_dict()


@FUZZ
@given(data=any_bytes | json_values.map(lambda v: json.dumps(v).encode()))
def test_circuit_reader_never_crashes_on_random_input(fuzz_dir, data):
    c = _clean_or_result(read_circuit, _write(fuzz_dir, "circuit.json", data))
    assert c is None or isinstance(c, Circuit)


@FUZZ
@given(key=st.sampled_from(CIRCUIT_FIELDS + ("method",)), value=json_values | st.lists(st.text(max_size=6)),
       delete=st.booleans())
def test_circuit_reader_names_the_broken_field(fuzz_dir, key, value, delete):
    d = _valid_circuit()
    if delete:
        del d[key]
    else:
        d[key] = value
    path = _write(fuzz_dir, "circuit.json", json.dumps(d).encode())
    try:
        c = read_circuit(path)
    except KmshcError as e:
        assert str(path) in str(e) and f"'{key}" in str(e), str(e)
        return
    assert c.model == d.get("model") and len(c.heads) == len(d["heads"])


@FUZZ
@given(heads=st.sets(st.tuples(st.integers(0, 40), st.integers(0, 40)), max_size=12),
       eps=st.floats(0.01, 1.0), seed=st.integers(0, 2**31), extra=st.dictionaries(
           st.sampled_from(["method", "wall_time_s", "source"]), json_values.filter(
               lambda v: not (isinstance(v, float) and math.isnan(v))), max_size=2))
def test_valid_circuit_round_trips(fuzz_dir, heads, eps, seed, extra):
    assume("NaN" not in json.dumps(extra))  # NaN != NaN would break the equality, not the reader
    c = Circuit(model="m", task="t", heads=tuple(f"L{l}H{h}" for l, h in heads), n_heads_total=41 * 41,
                epsilon=eps, seed=seed, extra=extra)
    path = fuzz_dir / "rt.json"
    c.save(path)
    assert read_circuit(path).to_dict() == c.to_dict()


# ----------------------------------------------------------------------------- experiment configs
EXP_FIELDS = tuple(Experiment.__dataclass_fields__)


@FUZZ
@given(d=st.dictionaries(st.sampled_from(EXP_FIELDS), json_values | st.sampled_from(
    ["tiny-gpt2", "grammar", "mean", "probe", [0.6, 0.2, 0.2], [" A", " B"]]), max_size=6))
def test_experiment_kwargs_never_crash(d):
    """``Experiment(**d)`` with the right keys and random values: valid, or an error naming the field."""
    try:
        exp = Experiment(**d)
    except KmshcError as e:
        assert any(f"'{k}'" in str(e) for k in d), str(e)
        return
    assert Experiment.from_dict(json.loads(json.dumps(exp.to_dict()))) == exp


@FUZZ
@given(d=json_values | st.dictionaries(st.text(max_size=10), json_values, max_size=4))
def test_experiment_from_dict_never_crashes(d):
    try:
        exp = Experiment.from_dict(d, where="circuit.json: config.experiment")
    except KmshcError as e:
        assert str(e).startswith("circuit.json: config.experiment: ")
        return
    assert isinstance(exp, Experiment)


# ----------------------------------------------------------------------------- train/search configs, search state
import sys  # noqa: E402

import yaml  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
small = st.none() | st.booleans() | st.integers(-3, 3) | st.floats(-2, 2) | st.text(max_size=6) | \
    st.lists(st.integers(0, 2), max_size=3) | st.dictionaries(st.text(max_size=4), st.integers(0, 2), max_size=2)


def _entry_points():
    sys.path.insert(0, str(REPO))
    try:
        import search
        import train
    finally:
        sys.path.remove(str(REPO))
    return search, train


def _parses_or_fails_cleanly(parse) -> None:
    """``parse()`` succeeds, exits with a usage error (2), or raises a KmshcError; anything else fails."""
    try:
        parse()
    except SystemExit as e:
        assert e.code == 2
    except KmshcError:
        pass


SEARCH_KEYS = ["mode", "semantics", "epsilon", "threshold", "K", "N", "gate_threshold", "seed", "macro", "window", "baseline",
               "experiment", "foo"]
EXP_KEYS = ["model", "task", "n", "limit", "split_fractions", "scorer", "ablation", "labels", "task_args", "bar"]
search_yaml = st.dictionaries(st.sampled_from(SEARCH_KEYS), small | st.dictionaries(st.sampled_from(EXP_KEYS), small,
                                                                                     max_size=3), max_size=4)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=any_bytes | search_yaml.map(lambda d: yaml.safe_dump(d).encode()))
def test_search_config_loader_never_crashes(fuzz_dir, capsys, data):
    """search.py's parser on random YAML: a SearchConfig, a usage error (exit 2) or a KmshcError."""
    search, _ = _entry_points()
    path = _write(fuzz_dir, "search.yaml", data)
    _parses_or_fails_cleanly(lambda: search.parse(["--config", str(path)]))
    capsys.readouterr()


train_yaml = st.fixed_dictionaries({}, optional={
    "model": st.dictionaries(st.sampled_from(["lr", "lam", "objective", "sparsity", "target", "gate_threshold", "zzz"]), small,
                             max_size=2) | small,
    "data": st.dictionaries(st.sampled_from(["batch_size", "experiment"]), small | st.dictionaries(
        st.sampled_from(["n", "task", "ablation", "scorer", "split_fractions"]), small, max_size=2), max_size=2) | small,
    "trainer": st.dictionaries(st.sampled_from(["max_steps", "devices", "accelerator"]), small, max_size=2) | small,
    "name": small, "qqq": small})


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=any_bytes | train_yaml.map(lambda d: yaml.safe_dump(d).encode()))
def test_train_config_loader_never_crashes(fuzz_dir, capsys, data):
    """train.py's LightningCLI on the tiny config plus a random YAML layer: parse and instantiate, never fit."""
    _, train = _entry_points()
    path = _write(fuzz_dir, "train.yaml", data)
    _parses_or_fails_cleanly(lambda: train.TrainCLI(
        train.GateModule, train.GateDataModule, run=False, save_config_callback=None,
        args=["--config", str(REPO / "configs" / "train" / "tiny.yaml"), "--config", str(path),
              "--runs_dir", str(fuzz_dir / "runs"), "--overwrite", "true", "--trainer.enable_progress_bar", "false"]))
    capsys.readouterr()


@FUZZ
@given(data=any_bytes | json_values.map(lambda v: json.dumps(v).encode()) | st.fixed_dictionaries(
    {"fingerprint": st.just({})}, optional={"log": json_values, "trace": json_values}).map(
        lambda d: json.dumps(d).encode()))
def test_search_state_reader_never_crashes(fuzz_dir, data):
    """``--resume`` on a corrupted or foreign search_state.json: a clean error, or a valid replay."""
    from kmshc.search.state import Recorder
    path = _write(fuzz_dir, "search_state.json", data)
    try:
        Recorder(lambda masks: [0.5] * len(masks), path, resume=True, fingerprint={})
    except KmshcError as e:
        assert str(path) in str(e)
