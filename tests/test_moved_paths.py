"""Module paths of the flat layout still import, for one release, as the modules that now hold
their code: the same module object, so classes keep their identity (pickles, configs' class
paths and old scripts keep loading), with no file left at the package root."""
from __future__ import annotations

import importlib
import pickle
import subprocess
import sys
from pathlib import Path

import kmshc

ROOT = Path(kmshc.__file__).parent


def test_every_old_path_is_the_new_module_and_has_no_file():
    for old, new in kmshc._MOVED.items():
        assert importlib.import_module(old) is importlib.import_module(new), old
        assert not (ROOT / (old.split(".", 1)[1].replace(".", "/") + ".py")).exists(), old
        assert importlib.import_module(new).__spec__.name == new  # the alias leaves the spec alone


def test_from_old_path_import_name_is_the_same_object():
    from kmshc.engine.scoring import Scorer
    from kmshc.scoring import Scorer as OldScorer
    import kmshc.scoring
    assert OldScorer is Scorer and kmshc.scoring.Scorer is Scorer


def test_an_object_pickled_under_an_old_path_loads():
    from kmshc.engine.cost import CostRecord
    data = pickle.dumps(CostRecord(1.0, 1.0, 0.0), protocol=0).replace(b"kmshc.engine.cost", b"kmshc.cost")
    assert b"kmshc.cost" in data and pickle.loads(data) == CostRecord(1.0, 1.0, 0.0)


def test_old_paths_import_in_a_fresh_interpreter():
    """First import through the old path (nothing imported the new one yet)."""
    code = "import kmshc.scoring, kmshc.engine.scoring as n; assert kmshc.scoring is n"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_config_naming_an_old_class_path_parses():
    """Lightning and jsonargparse configs (``class_path: kmshc.train_utils.RankGatesDump``, a
    checkpoint's recorded hparams) resolve the old path to the same class."""
    from jsonargparse import ArgumentParser
    from lightning import Callback

    from kmshc.train.run import RankGatesDump
    p = ArgumentParser()
    p.add_argument("--callback", type=Callback)
    cfg = p.parse_args(["--callback", '{"class_path": "kmshc.train_utils.RankGatesDump", "init_args": {"dirpath": "x"}}'])
    assert isinstance(p.instantiate_classes(cfg).callback, RankGatesDump)
