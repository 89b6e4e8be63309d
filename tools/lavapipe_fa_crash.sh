#!/usr/bin/env bash
# Reproduce the lavapipe fault with stock types only (docs/BACKENDS.md, "The lavapipe crash"):
# five upstream FLASH_ATTN_EXT cases, q8_0 K and V, no turbo type in the process. Runs
# test-backend-ops N times (default 8) on Vulkan0 and prints how each run ended. Extra
# environment passes through, e.g. GGML_VK_SERIALIZE_SUBMISSIONS=1 or LP_NUM_THREADS=0.
#
#   tools/lavapipe_fa_crash.sh [N]        (needs `tq-gguf build --backend vulkan` first)
set -uo pipefail
cd "$(dirname "$0")/.."
tool=$(${PYTHON:-.venv/bin/python} -c 'from tq_gguf.nativebuild import builder; print(builder.tool_path("test-backend-ops"))' 2>/dev/null) || {
    echo "no installed build: run tq-gguf build --backend vulkan" >&2; exit 2; }
export GGML_VK_VISIBLE_DEVICES="${GGML_VK_VISIBLE_DEVICES:-0}"
export MESA_SHADER_CACHE_DIR="${MESA_SHADER_CACHE_DIR:-$HOME/.cache/tq-gguf/mesa-shader-cache}"
cases='hsk=64,hsv=64,(nh=8,nr23=\[4,1\],kv=(1024|2048)|nh=4,nr23=\[1,1\],kv=113,nb=1,mask=1,sinks=1),.*type_K=q8_0,type_V=q8_0'
log=$(mktemp)
for i in $(seq 1 "${1:-8}"); do
    "$tool" test -b Vulkan0 -o FLASH_ATTN_EXT -p "$cases" >"$log" 2>&1
    rc=$?
    printf 'run %d: exit %d, %d cases passed, last line: %s\n' "$i" "$rc" \
        "$(grep -c 'FLASH_ATTN_EXT.*OK' "$log")" "$(tail -n 1 "$log" | sed 's/\x1b\[[0-9;]*m//g' | cut -c1-60)"
done
rm -f "$log"
