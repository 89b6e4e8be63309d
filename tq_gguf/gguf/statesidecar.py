"""A session file's fingerprint (stateorigin), kept beside it as `<file>.tq.json`.

llama.cpp's session file ('ggsn', version, token count, tokens, state) is read by
llama_state_load_file, which takes every byte after the tokens as the state: nothing can be
appended, and a header of our own in front would make the file unreadable to llama.cpp's tools
(`llama-cli --prompt-cache FILE`). So the session file stays exactly what llama_state_save_file
wrote, and its fingerprint lives in a small JSON file beside it, together with the size and
sha256 of the session file it describes.

Two files cannot be replaced in one step. The sidecar is written (atomically) once the new
session file is complete under its temporary name, before that is renamed into place: a disk
filling up during either write leaves both files as they were, and only a crash between the two
renames leaves the new sidecar beside the earlier session file. A sidecar whose digest does not
match its session file (that crash, a file overwritten by llama.cpp's tools, a file copied
without its sidecar) describes another file and is ignored: the file loads as any plain
llama.cpp session file does, with the layout checks only. A sidecar that cannot be read as one
is refused by name; it was edited or damaged, and removing it loads the file without it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from .. import atomicfile
from .statefile import StateError
from .stateorigin import Fingerprint

SUFFIX = ".tq.json"
_CHUNK = 1 << 20


def path_for(session_file: Path) -> Path:
    return session_file.with_name(session_file.name + SUFFIX)


def _digest(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return path.stat().st_size, digest.hexdigest()


def write(written: Path, session_file: Path, fingerprint: Fingerprint) -> None:
    """Record `fingerprint` for the session file at `written`, which is about to become `session_file`."""
    size, sha = _digest(written)
    doc = {"fingerprint": fingerprint.as_dict(), "session_file": {"size": size, "sha256": sha}}
    atomicfile.write_text(path_for(session_file), json.dumps(doc, indent=1) + "\n")


def read(session_file: Path) -> Fingerprint | None:
    """The fingerprint of `session_file`, or None when it has no sidecar that describes it."""
    sidecar = path_for(session_file)
    try:
        text = sidecar.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StateError(f"cannot read {sidecar}: {exc.strerror}") from None
    try:
        doc = json.loads(text)
        described = doc["session_file"]
        if not isinstance(described, dict):
            raise ValueError("no session file digest")
        if (described.get("size"), described.get("sha256")) != _digest(session_file):
            return None  # it describes an earlier or another file (see above)
        return Fingerprint.from_dict(doc["fingerprint"])
    except (ValueError, KeyError, TypeError) as exc:
        why = f"no {exc.args[0]}" if isinstance(exc, KeyError) else str(exc)
        raise StateError(f"{sidecar} is not a readable tq-gguf state fingerprint ({why}); "
                         f"remove it to load {session_file} without the fingerprint checks") from None
