"""Build hook: copy the top-level ``configs/`` into the wheel as ``kmshc/configs/``.

The YAML presets live once, at the top of the checkout, where the docs and ``train.py`` /
``search.py`` point. An installed package has no checkout, so the build carries a copy inside the
package; :mod:`kmshc.entry.configs` looks there when ``configs/...`` is not found otherwise.
Everything else about the build is in pyproject.toml.
"""
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

CONFIGS = Path(__file__).resolve().parent / "configs"


class BuildPyWithConfigs(build_py):
    def run(self) -> None:
        super().run()
        if not self.editable_mode:  # an editable install reads the checkout's configs/ directly
            target = Path(self.build_lib) / "kmshc" / "configs"
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(CONFIGS, target, ignore=shutil.ignore_patterns("*~", ".*"))


setup(cmdclass={"build_py": BuildPyWithConfigs})
