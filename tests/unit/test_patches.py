"""The patch mechanism on small trees, and the real series on the real sources."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tq_gguf import paths
from tq_gguf.nativebuild import patches, sdist
from tq_gguf.errors import PatchError

REPO = Path(__file__).resolve().parents[2]
MAKE_PATCHES = REPO / "tools" / "make_patches.py"


def make_tree(root: Path) -> Path:
    (root / "src").mkdir(parents=True)
    (root / "src" / "a.c").write_text("int a(void) {\n    return 1;\n}\n")
    (root / "src" / "b.c").write_text("int b(void) {\n    return 2;\n}\n")
    return root


def run_make_patches(pristine: Path, work: Path, series: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(MAKE_PATCHES), "--pristine", str(pristine), "--work", str(work),
         "--patches", str(series), *extra],
        capture_output=True, text=True,
    )


@pytest.fixture
def series_setup(tmp_path):
    pristine = make_tree(tmp_path / "pristine")
    work = tmp_path / "work"
    shutil.copytree(pristine, work)
    (work / "src" / "a.c").write_text("int a(void) {\n    return 10;\n}\n")
    (work / "src" / "new.h").write_text("#define NEW 1\n")
    series = tmp_path / "patches"
    series.mkdir()
    res = run_make_patches(pristine, work, series, "--new", "first", "-m", "first change")
    assert res.returncode == 0, res.stderr
    return pristine, work, series


def test_tool_writes_numbered_series_and_base_manifest(series_setup):
    _, _, series = series_setup
    assert [p.name for p in patches.series(series)] == ["0001-first.patch"]
    text = (series / "0001-first.patch").read_text()
    assert text.startswith("first change\n")
    assert {t.path: t.created for t in patches.touched_files(series / "0001-first.patch")} == {
        "src/a.c": False, "src/new.h": True}
    assert "src/a.c" in (series / patches.BASE_MANIFEST).read_text()


def test_series_applies_and_reproduces_the_work_tree(series_setup, tmp_path):
    pristine, work, series = series_setup
    target = tmp_path / "target"
    shutil.copytree(pristine, target)
    assert patches.apply_series(target, series) == ["0001-first.patch"]
    for rel in ("src/a.c", "src/b.c", "src/new.h"):
        assert (target / rel).read_text() == (work / rel).read_text()


def test_tool_refuses_unowned_changes_without_new(series_setup):
    pristine, work, series = series_setup
    (work / "src" / "b.c").write_text("int b(void) { return 3; }\n")
    res = run_make_patches(pristine, work, series)
    assert res.returncode == 1
    assert "src/b.c" in res.stderr and "--new" in res.stderr


def test_tool_keeps_edits_in_the_owning_patch(series_setup):
    pristine, work, series = series_setup
    (work / "src" / "a.c").write_text("int a(void) {\n    return 11;\n}\n")
    res = run_make_patches(pristine, work, series)
    assert res.returncode == 0, res.stderr
    assert "return 11;" in (series / "0001-first.patch").read_text()
    assert len(patches.series(series)) == 1


def test_base_mismatch_is_refused_before_applying(series_setup, tmp_path):
    pristine, _, series = series_setup
    target = tmp_path / "target"
    shutil.copytree(pristine, target)
    (target / "src" / "a.c").write_text("int a(void) { return 99; }\n")
    with pytest.raises(PatchError, match=r"base tree mismatch: src/a\.c"):
        patches.apply_series(target, series)
    assert not (target / "src" / "new.h").exists()


def test_already_patched_tree_is_refused(series_setup, tmp_path):
    pristine, _, series = series_setup
    target = tmp_path / "target"
    shutil.copytree(pristine, target)
    patches.apply_series(target, series)
    with pytest.raises(PatchError, match="base tree mismatch"):
        patches.apply_series(target, series)


def test_patch_that_does_not_apply_names_patch_and_file(series_setup, tmp_path):
    pristine, _, series = series_setup
    (series / "0002-broken.patch").write_text(
        "broken\n\n--- a/src/b.c\n+++ b/src/b.c\n@@ -1,3 +1,3 @@\n int b(void) {\n-    return 7;\n+    return 8;\n }\n")
    manifest = series / patches.BASE_MANIFEST
    import hashlib
    digest = hashlib.sha256((pristine / "src" / "b.c").read_bytes()).hexdigest()
    manifest.write_text(manifest.read_text() + f"{digest}  src/b.c\n")
    target = tmp_path / "target"
    shutil.copytree(pristine, target)
    with pytest.raises(PatchError, match=r"patch 0002-broken\.patch does not apply to src/b\.c"):
        patches.apply_series(target, series)


def test_numbering_gaps_are_refused(tmp_path):
    (tmp_path / "0001-a.patch").write_text("")
    (tmp_path / "0003-c.patch").write_text("")
    with pytest.raises(PatchError, match="not numbered"):
        patches.series(tmp_path)


def test_real_series_applies_to_the_pinned_sources(tmp_path):
    """Our own series checks out against the pristine sdist (only touched files are needed)."""
    pristine = sdist.pristine_tree()
    target = tmp_path / "tree"
    for patch in patches.series(paths.PATCHES_DIR):
        for t in patches.touched_files(patch):
            if not t.created:
                (target / t.path).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(pristine / t.path, target / t.path)
    applied = patches.apply_series(target, paths.PATCHES_DIR)
    assert applied == [p.name for p in patches.series(paths.PATCHES_DIR)]


def test_real_series_creates_no_file():
    """Our kernel code lives whole in native/; the series only wires it in (docs/DEVELOPING.md, "Editing llama.cpp")."""
    created = [f"{patch.name}: {t.path}" for patch in patches.series(paths.PATCHES_DIR)
               for t in patches.touched_files(patch) if t.created]
    assert created == []
