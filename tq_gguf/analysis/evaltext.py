"""Evaluation text that ships on every Debian machine and that models have not memorised.

Git's release notes (installed by Debian's git package under
/usr/share/doc/git/RelNotes) are ordinary technical English, specific enough
that small models do not know them by heart. (Licence texts are no good: Qwen2.5
reaches perplexity 1.8 on the GPL.)
"""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import TqError

RELNOTES_DIR = Path("/usr/share/doc/git/RelNotes")


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", path.name))


def git_release_notes(max_bytes: int = 200_000, directory: Path = RELNOTES_DIR) -> str:
    """The newest release notes first, concatenated up to `max_bytes` (whole files only, then cut)."""
    files = sorted(directory.glob("*.txt"), key=_version_key, reverse=True)
    if not files:
        raise TqError(f"no release notes in {directory}; install Debian's git package (apt-get install git)")
    parts, size = [], 0
    for f in files:
        text = f.read_text(errors="replace")
        parts.append(text)
        size += len(text)
        if size >= max_bytes:
            break
    return "".join(parts)[:max_bytes]
