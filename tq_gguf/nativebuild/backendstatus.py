"""How far each build backend's turbo kernels have been proven: the one table that
`tq-gguf build --help`, `tq-gguf build` itself and `tq-gguf info` read.

A user choosing `--backend cuda` or `metal` should learn before compiling, not from a
failed build or wrong output, that those kernels have never run here. docs/BACKENDS.md
holds the evidence behind each line; change a row here when that evidence changes.
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import paths

# Where a user reads it: the repository's path in a checkout, the installed copy's otherwise.
BACKENDS_DOC = (paths.BACKENDS_DOC.relative_to(paths.REPO_ROOT).as_posix() if paths.SOURCE_ROOT == paths.REPO_ROOT
                else str(paths.BACKENDS_DOC))


@dataclass(frozen=True)
class BackendStatus:
    name: str
    status: str  # what has been done with its turbo kernels: "the kernels are <status>"
    has_run: bool  # the turbo kernels have executed and been checked against the reference


STATUS: dict[str, BackendStatus] = {s.name: s for s in (
    BackendStatus("cpu", "run and verified bit-exact against the NumPy reference (tq-gguf verify)", True),
    BackendStatus("vulkan", "run and verified on lavapipe (a Vulkan device on the CPU), on no GPU yet", True),
    BackendStatus("cuda", "compiled for sm_80 and sm_90, never run on a GPU", False),
    BackendStatus("metal", "written, never compiled or run (no macOS machine here)", False),
)}


def caveat(backend: str) -> str | None:
    """The one-line warning for a backend whose kernels have never run, or None."""
    status = STATUS[backend]
    if status.has_run:
        return None
    return f"warning: the {backend} backend's turbo kernels are {status.status}; untested, see {BACKENDS_DOC}"


def lines() -> list[str]:
    """One line per backend: its name and status, pointing to BACKENDS_DOC where it is untested."""
    width = max(map(len, STATUS))
    return [f"{s.name:<{width}}  {s.status}" + ("" if s.has_run else f"; untested, see {BACKENDS_DOC}")
            for s in STATUS.values()]
