"""Make one directory tree match another, touching only files whose bytes differ.

The CMake build tree is kept between builds; leaving unchanged sources with
their old mtimes is what lets a rebuild after a one-file patch edit recompile
one file instead of all of llama.cpp.
"""

from __future__ import annotations

import filecmp
import shutil
from pathlib import Path


def sync_tree(src: Path, dst: Path) -> int:
    """Mirror `src` into `dst`; returns how many files were written or removed."""
    changed = 0
    dst.mkdir(parents=True, exist_ok=True)
    wanted: set[Path] = set()
    for s in src.rglob("*"):
        rel = s.relative_to(src)
        d = dst / rel
        wanted.add(rel)
        if s.is_dir():
            d.mkdir(parents=True, exist_ok=True)
            continue
        if d.is_file() and filecmp.cmp(s, d, shallow=False):
            continue
        if d.is_dir():
            shutil.rmtree(d)
        # A fresh mtime, not the source's: an older stamp would hide the change from ninja.
        shutil.copyfile(s, d)
        shutil.copymode(s, d)
        changed += 1
    for d in sorted(dst.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if d.relative_to(dst) not in wanted:
            if d.is_dir() and not d.is_symlink():
                shutil.rmtree(d, ignore_errors=True)
            elif d.exists() or d.is_symlink():
                d.unlink()
            changed += 1
    return changed
