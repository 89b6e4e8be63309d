"""Copies what an installed tq-gguf needs to build and verify into the wheel.

`tq-gguf build` applies patches/ and compiles native/; `tq-gguf verify` reads the real
K/V rows in tests/data. They live at the top of the repository, so build_py copies them
to tq_gguf/_data/ (tq_gguf.paths.SHIPPED names them; MANIFEST.in puts them in the sdist).
An editable install reads the repository instead.
"""

import shutil
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

sys.path.insert(0, str(Path(__file__).parent))
from tq_gguf.paths import SHIPPED  # noqa: E402  (the one list of shipped paths)


class BuildPyWithSources(build_py):
    def run(self):
        super().run()
        if self.editable_mode:
            return
        data = Path(self.build_lib) / "tq_gguf" / "_data"
        shutil.rmtree(data, ignore_errors=True)  # build/ outlives a build: never ship stale files
        for rel, is_dir in SHIPPED:
            target = data / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            if is_dir:
                shutil.copytree(rel, target, dirs_exist_ok=True,
                                ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                shutil.copy2(rel, target)


setup(cmdclass={"build_py": BuildPyWithSources})
