"""The benchmarks (tools/bench/) and quantizer studies (tools/studies/) still import and print --help.

They are run by hand and rarely, so an import or a rename that breaks one would otherwise
go unseen until someone needs its numbers again. --help reads no model and no native
library, so this runs on a fresh checkout. A module there without a `__main__` block is a
helper of the scripts beside it: it must import, and one of them must import it.
Each study's first docstring line names the docs/FORMAT.md section it backs and the command
that reruns it.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

TOOLS = Path(__file__).resolve().parents[2] / "tools"
FOLDERS = ("bench", "studies")
MODULES = sorted(p for folder in FOLDERS for p in (TOOLS / folder).glob("*.py"))


def is_script(path: Path) -> bool:
    return 'if __name__ == "__main__":' in path.read_text()


def tool_id(path: Path) -> str:
    return f"{path.parent.name}/{path.name}"


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


SCRIPTS = [p for p in MODULES if is_script(p)]
HELPERS = [p for p in MODULES if not is_script(p)]


def test_the_folders_hold_tools():
    assert SCRIPTS, f"no scripts found under {TOOLS}/{{{','.join(FOLDERS)}}}"


@pytest.mark.parametrize("path", SCRIPTS, ids=tool_id)
def test_script_prints_help(path):
    res = subprocess.run([sys.executable, str(path), "--help"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, f"{tool_id(path)} --help exited {res.returncode}:\n{res.stderr}"
    assert "usage:" in res.stdout.lower(), f"{tool_id(path)} --help printed no usage:\n{res.stdout}"


@pytest.mark.parametrize("path", HELPERS, ids=tool_id)
def test_helper_imports_and_is_used(path):
    # imported as the scripts beside it import it: by name, with its folder on sys.path
    code = f"import sys; sys.path.insert(0, {str(path.parent)!r}); import {path.stem}"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, f"import {path.stem} failed:\n{res.stderr}"
    users = [p.name for p in SCRIPTS if p.parent == path.parent and path.stem in imported_modules(p)]
    assert users, f"{tool_id(path)} has no __main__ and no script beside it imports it: dead code"


@pytest.mark.parametrize("path", [p for p in MODULES if p.parent.name == "studies"], ids=tool_id)
def test_study_names_its_section_and_command(path):
    first = (ast.get_docstring(ast.parse(path.read_text())) or "").splitlines()[:1]
    assert first and "docs/FORMAT.md" in first[0] and "python tools/studies/" in first[0], \
        f"{tool_id(path)}: the docstring's first line should name its FORMAT.md section and its command"
