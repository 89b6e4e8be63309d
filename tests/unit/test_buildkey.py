import shutil

from tq_gguf import paths
from tq_gguf.nativebuild import buildkey
from tq_gguf.nativebuild.builder import defines_for
from tq_gguf.nativebuild.treesync import sync_tree


def copy_inputs(tmp_path):
    p = tmp_path / "patches"
    n = tmp_path / "native"
    shutil.copytree(paths.PATCHES_DIR, p)
    shutil.copytree(paths.NATIVE_DIR, n)
    return p, n


def test_key_is_stable_and_tracks_every_input(tmp_path):
    p, n = copy_inputs(tmp_path)
    d = defines_for("cpu")
    base = buildkey.build_key("cpu", d, p, n)
    assert base == buildkey.build_key("cpu", dict(reversed(list(d.items()))), p, n)
    assert base.startswith("cpu-")
    assert buildkey.build_key("vulkan", d, p, n) != base
    assert buildkey.build_key("cpu", {**d, "GGML_NATIVE": "OFF"}, p, n) != base
    (n / "include" / "ggml-tq.h").write_text((n / "include" / "ggml-tq.h").read_text() + "\n// edit\n")
    assert buildkey.build_key("cpu", d, p, n) != base


def test_a_backend_only_folder_keys_only_its_backend(tmp_path):
    p, n = copy_inputs(tmp_path)
    keys = {b: buildkey.build_key(b, defines_for(b), p, n) for b in ("cpu", "vulkan", "cuda")}
    cuda_src = sorted((n / "cuda").glob("*.cuh"))[0]
    cuda_src.write_text(cuda_src.read_text() + "\n// edit\n")
    after = {b: buildkey.build_key(b, defines_for(b), p, n) for b in keys}
    assert after["cpu"] == keys["cpu"] and after["vulkan"] == keys["vulkan"]
    assert after["cuda"] != keys["cuda"]
    # a shared source still keys every backend
    shared = n / "cpu" / "tq-fattn.c"
    shared.write_text(shared.read_text() + "\n// edit\n")
    assert all(buildkey.build_key(b, defines_for(b), p, n) != after[b] for b in keys)


def test_patch_edit_changes_the_key(tmp_path):
    p, n = copy_inputs(tmp_path)
    d = defines_for("cpu")
    base = buildkey.build_key("cpu", d, p, n)
    first = sorted(p.glob("*.patch"))[0]
    first.write_text(first.read_text().replace("tq-gguf", "tq_gguf", 1))
    assert buildkey.build_key("cpu", d, p, n) != base


def test_generated_build_id_header_is_not_an_input(tmp_path):
    p, n = copy_inputs(tmp_path)
    d = defines_for("cpu")
    base = buildkey.build_key("cpu", d, p, n)
    (n / "tq-build-id.h").write_text('#define TQ_BUILD_ID "x"\n')
    assert buildkey.build_key("cpu", d, p, n) == base


def test_sync_tree_rewrites_only_changed_files(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    (src / "d").mkdir(parents=True)
    (src / "same.c").write_text("same")
    (src / "d" / "changed.c").write_text("new")
    (dst / "d").mkdir(parents=True)
    (dst / "same.c").write_text("same")
    (dst / "d" / "changed.c").write_text("old")
    (dst / "gone.c").write_text("x")
    import os
    os.utime(dst / "same.c", (1_000_000, 1_000_000))
    assert sync_tree(src, dst) == 2
    assert (dst / "same.c").stat().st_mtime == 1_000_000  # untouched: no rebuild
    assert (dst / "d" / "changed.c").read_text() == "new"
    assert (dst / "d" / "changed.c").stat().st_mtime > 1_000_000
    assert not (dst / "gone.c").exists()
    assert sync_tree(src, dst) == 0
