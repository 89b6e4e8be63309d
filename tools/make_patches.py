#!/usr/bin/env python3
"""Turn an edited, patched source tree back into the numbered patch series.

Edit real source in a patched tree (by default the one `tq-gguf build` keeps in
<cache>/work/cpu/src), then run this to rewrite `patches/*.patch` and
`patches/base.sha256`. Each modified file belongs to exactly one patch: files a
patch already touches stay in it; files nobody touches yet need `--new NAME`,
which appends a new patch holding them.

    python tools/make_patches.py                      # refresh the series from the work tree
    python tools/make_patches.py --new turbo-cuda -m "CUDA kernels for turbo types"
    python tools/make_patches.py --work <tree> --only cuda   # rewrite only the patches named *cuda*

`--only` lets work trees of different backends feed their own patches: patches
outside the selection, and their base hashes, are left as they are.
"""

from __future__ import annotations

import argparse
import filecmp
import hashlib
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tq_gguf import paths  # noqa: E402
from tq_gguf.nativebuild import patches, sdist  # noqa: E402
from tq_gguf.nativebuild.builder import BUILD_INFO_FILE, NATIVE_DEST  # noqa: E402
from tq_gguf.errors import TqError  # noqa: E402

# Build products and copied inputs that live in the work tree but are not patches.
IGNORED = (NATIVE_DEST.as_posix() + "/", "llama_cpp/lib/", BUILD_INFO_FILE.as_posix())


def _ignored(rel: str) -> bool:
    return any(rel == ig or rel.startswith(ig) for ig in IGNORED) or ".git" in Path(rel).parts


def changed_files(pristine: Path, work: Path) -> dict[str, bool]:
    """Relative path -> created?, for every file whose bytes differ from the pristine tree."""
    out: dict[str, bool] = {}
    for w in work.rglob("*"):
        if not w.is_file():
            continue
        rel = w.relative_to(work).as_posix()
        if _ignored(rel):
            continue
        p = pristine / rel
        if not p.exists():
            out[rel] = True
        elif not filecmp.cmp(p, w, shallow=False):
            out[rel] = False
    for p in pristine.rglob("*"):
        rel = p.relative_to(pristine).as_posix()
        if p.is_file() and not _ignored(rel) and not (work / rel).exists():
            raise TqError(f"{rel} was deleted in the work tree; the series only adds and modifies files")
    return out


def file_diff(pristine: Path, work: Path, rel: str, created: bool) -> str:
    old = "/dev/null" if created else str(pristine / rel)
    cmd = ["diff", "-u", "--label", "/dev/null" if created else f"a/{rel}", "--label", f"b/{rel}", old, str(work / rel)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode not in (0, 1):
        raise TqError(f"diff failed for {rel}: {res.stderr.strip()}")
    return res.stdout


def patch_header(patch: Path) -> str:
    lines = []
    for line in patch.read_text().splitlines(keepends=True):
        if line.startswith("--- "):
            break
        lines.append(line)
    return "".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=paths.work_dir("cpu") / "src", help="edited sdist root")
    ap.add_argument("--pristine", type=Path, help="unpatched sdist root (default: the cached pristine extract)")
    ap.add_argument("--patches", type=Path, default=paths.PATCHES_DIR)
    ap.add_argument("--new", metavar="NAME", help="append a patch NNNN-NAME.patch for files no patch owns yet")
    ap.add_argument("-m", "--message", help="description for the new patch")
    ap.add_argument("--only", metavar="TEXT", help="rewrite only patches whose file name contains TEXT (and --new)")
    args = ap.parse_args()
    try:
        pristine = args.pristine or sdist.pristine_tree()
        changed = changed_files(pristine, args.work)
        series = patches.series(args.patches)
        owner: dict[str, Path] = {}
        for patch in series:
            for t in patches.touched_files(patch):
                owner[t.path] = patch
        unowned = sorted(rel for rel in changed if rel not in owner)
        new_patch = None
        if unowned:
            if not args.new:
                raise TqError("files changed that no patch owns; rerun with --new NAME:\n  " + "\n  ".join(unowned))
            new_patch = args.patches / f"{len(series) + 1:04d}-{args.new}.patch"
            series.append(new_patch)
            for rel in unowned:
                owner[rel] = new_patch
        selected = [p for p in series if args.only is None or args.only in p.name or p == new_patch]
        for patch in selected:
            files = sorted(rel for rel, p in owner.items() if p == patch and rel in changed)
            dropped = sorted(rel for rel, p in owner.items() if p == patch and rel not in changed)
            for rel in dropped:
                print(f"{patch.name}: {rel} no longer differs from the base; dropped from the patch")
            if not files:
                raise TqError(f"{patch.name} would be empty; delete it and renumber the series")
            header = patch_header(patch) if patch.exists() else f"{args.message or args.new}\n\n"
            body = "".join(file_diff(pristine, args.work, rel, changed[rel]) for rel in files)
            text = header + body
            if not patch.exists() or patch.read_text() != text:
                patch.write_text(text)
                print(f"wrote {patch.name} ({len(files)} files)")
        mine = {rel for rel, p in owner.items() if p in selected}
        manifest_path = args.patches / patches.BASE_MANIFEST
        manifest = {}
        if args.only is not None and manifest_path.exists():  # keep the other patches' base hashes
            for line in manifest_path.read_text().splitlines():
                digest, rel = line.split("  ", 1)
                if rel not in mine:
                    manifest[rel] = digest
        for rel in sorted(changed):
            if not changed[rel] and (args.only is None or rel in mine):
                manifest[rel] = hashlib.sha256((pristine / rel).read_bytes()).hexdigest()
        manifest_path.write_text("".join(f"{manifest[rel]}  {rel}\n" for rel in sorted(manifest)))
    except TqError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
