"""The numbered patch series in `patches/` and how it is applied.

Patches are unified diffs against the root of the extracted llama-cpp-python
sdist (so `vendor/llama.cpp/...` and `llama_cpp/...` can both be patched),
applied in file-name order with `git apply`. Before anything is applied the
tree is checked against `patches/base.sha256`: the pristine hash of every file
the series modifies. `tools/make_patches.py` regenerates both from an edited
tree, so nobody edits diffs by hand.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..errors import PatchError

BASE_MANIFEST = "base.sha256"
PATCH_NAME = re.compile(r"^(\d{4})-[A-Za-z0-9._-]+\.patch$")


@dataclass(frozen=True)
class Touched:
    """A file a patch touches; `created` when the patch adds it."""

    path: str
    created: bool


def series(patches_dir: Path) -> list[Path]:
    """The patches in application order; refuses names that break the numbering."""
    found = sorted(p for p in patches_dir.glob("*.patch"))
    for p in found:
        if not PATCH_NAME.match(p.name):
            raise PatchError(f"patch {p.name}: name must look like 0001-short-name.patch")
    numbers = [int(PATCH_NAME.match(p.name).group(1)) for p in found]
    if numbers != list(range(1, len(found) + 1)):
        raise PatchError(f"patch series in {patches_dir} is not numbered 0001..{len(found):04d}: {numbers}")
    return found


def series_hash(patches_dir: Path) -> str:
    digest = hashlib.sha256()
    files = series(patches_dir)
    manifest = patches_dir / BASE_MANIFEST
    if manifest.exists():
        files = files + [manifest]
    for p in files:
        digest.update(p.name.encode() + b"\0" + p.read_bytes() + b"\0")
    return digest.hexdigest()


def touched_files(patch: Path) -> list[Touched]:
    """Files named by the `---`/`+++` headers of a unified diff."""
    out: list[Touched] = []
    old: str | None = None
    for line in patch.read_text(errors="replace").splitlines():
        if line.startswith("--- "):
            old = line[4:].split("\t")[0]
        elif line.startswith("+++ ") and old is not None:
            new = line[4:].split("\t")[0]
            if new == "/dev/null":
                raise PatchError(f"patch {patch.name}: deletes {old}; the series only adds and modifies files")
            out.append(Touched(_strip_prefix(new), created=(old == "/dev/null")))
            old = None
    return out


def _strip_prefix(name: str) -> str:
    return name[2:] if name.startswith(("a/", "b/")) else name


def read_base_manifest(patches_dir: Path) -> dict[str, str]:
    manifest = patches_dir / BASE_MANIFEST
    if not manifest.exists():
        return {}
    entries: dict[str, str] = {}
    for line in manifest.read_text().splitlines():
        if line.strip():
            digest, path = line.split(None, 1)
            entries[path.strip()] = digest
    return entries


def check_base(tree: Path, patches_dir: Path) -> None:
    """Refuse a tree that is not the one the series was made against."""
    patches = series(patches_dir)
    base = read_base_manifest(patches_dir)
    for patch in patches:
        for t in touched_files(patch):
            target = tree / t.path
            if t.created:
                if target.exists():
                    raise PatchError(
                        f"base tree mismatch: {t.path} already exists, but {patch.name} creates it "
                        f"(is the tree already patched?)"
                    )
                continue
            if t.path not in base:
                raise PatchError(f"{patch.name} modifies {t.path}, which is missing from patches/{BASE_MANIFEST}")
            if not target.exists():
                raise PatchError(f"base tree mismatch: {t.path} (patched by {patch.name}) does not exist in {tree}")
            actual = hashlib.sha256(target.read_bytes()).hexdigest()
            if actual != base[t.path]:
                raise PatchError(
                    f"base tree mismatch: {t.path} differs from the pristine file {patch.name} was made "
                    f"against (sha256 {actual[:12]}, expected {base[t.path][:12]})"
                )


_FAILED_FILE = re.compile(r"error: (?:patch failed: (?P<a>[^:\n]+):\d+|(?P<b>[^:\n]+): (?:patch does not apply|No such file or directory|already exists in working directory|does not exist in index))")


def _git_apply(tree: Path, patch: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    # Never let git discover an enclosing repository: paths must be relative to `tree`.
    env["GIT_CEILING_DIRECTORIES"] = str(tree.resolve().parent)
    return subprocess.run(
        ["git", "apply", "--whitespace=nowarn", *extra, str(patch.resolve())],
        cwd=tree, env=env, capture_output=True, text=True,
    )


def apply_series(tree: Path, patches_dir: Path) -> list[str]:
    """Check the base, then apply every patch in order; returns the applied names."""
    check_base(tree, patches_dir)
    applied = []
    for patch in series(patches_dir):
        check = _git_apply(tree, patch, "--check")
        if check.returncode != 0:
            m = _FAILED_FILE.search(check.stderr)
            where = (m.group("a") or m.group("b")) if m else "unknown file"
            raise PatchError(f"patch {patch.name} does not apply to {where}:\n{check.stderr.strip()}")
        done = _git_apply(tree, patch)
        if done.returncode != 0:
            raise PatchError(f"patch {patch.name} failed while applying:\n{done.stderr.strip()}")
        applied.append(patch.name)
    return applied
