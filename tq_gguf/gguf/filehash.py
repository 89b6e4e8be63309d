"""The sha256 of a whole model file, read once per version of the file.

Cached results (needle cells, eval bases) are keyed by the model they came from; a hash of
part of the file would let an edited model reuse another model's results. Hashing gigabytes
takes seconds, so the digest is remembered under the cache dir by the file's identity and
stat (device, inode, size, mtime, ctime): any write to the file changes its ctime, which no
user can set back, so an edited file is hashed again.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from .. import atomicfile, paths

_CHUNK = 1 << 20
_HEX64 = re.compile(r"[0-9a-f]{64}")


def _memo(path: Path) -> Path:
    st = path.stat()
    ident = f"{path.resolve()}|{st.st_dev}|{st.st_ino}|{st.st_size}|{st.st_mtime_ns}|{st.st_ctime_ns}"
    return paths.cache_root() / "sha256" / hashlib.sha256(ident.encode()).hexdigest()[:32]


def remember(path: Path, digest: str) -> None:
    """Record `digest` as `path`'s (one who just checked it, e.g. `models fetch`), if the cache dir
    is writable; a memo that cannot be written only costs a later hash."""
    memo = _memo(path)
    try:
        memo.parent.mkdir(parents=True, exist_ok=True)
        atomicfile.write_text(memo, digest)
    except (OSError, atomicfile.DiskFullError):
        pass


def sha256(path: Path) -> str:
    """The hex sha256 of the whole file at `path`."""
    memo = _memo(path)
    try:
        known = memo.read_text().strip()
    except OSError:
        known = ""
    if _HEX64.fullmatch(known):
        return known
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    remember(path, digest.hexdigest())
    return digest.hexdigest()
