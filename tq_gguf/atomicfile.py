"""Files written whole or not at all: to a temporary name in the same directory, then renamed.

`os.replace` within one directory (one file system) is atomic, so a reader, or a later run,
sees either the earlier file or the new one, never half of one: a full disk, a crash or
Ctrl-C mid-write leaves the earlier file as it was and removes the temporary one. Every
writer of a file tq-gguf keeps (session states, needle cells, eval bases) goes through here.
"""

from __future__ import annotations

import errno
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .errors import TqError

# errno values that mean "no room": a full file system, or a user's quota used up
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


class DiskFullError(TqError):
    """The disk (or quota) filled up while a file was written; the earlier file is unchanged."""


def temporary(path: Path) -> Path:
    """A name beside `path`, unique to this process, to write to before the rename."""
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


@contextmanager
def replacing(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write the new `path` to; when the block ends normally it
    replaces `path`, and when it raises the temporary file is removed and `path` is left as it
    was. Running out of space (ENOSPC, EDQUOT) becomes one DiskFullError naming the file.
    The directory must exist (callers that keep a cache create theirs)."""
    path = Path(path)
    tmp = temporary(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as e:
        if e.errno in _NO_SPACE:
            raise DiskFullError(f"no space left on the device to write {path}; "
                                f"{'the earlier file is unchanged' if path.exists() else 'nothing was written'}"
                                ) from None
        raise
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(path: str | Path, data: bytes) -> None:
    """`path` holds `data` afterwards, or is unchanged (see `replacing`)."""
    with replacing(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            # flushed to the disk before the rename, so a power cut cannot leave an empty file
            f.flush()
            os.fsync(f.fileno())


def write_text(path: str | Path, text: str) -> None:
    write_bytes(path, text.encode())
