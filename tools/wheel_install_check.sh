#!/usr/bin/env bash
# The package works outside a checkout: build the wheel, install it into a scratch venv in
# a scratch folder, and run `tq-gguf build` (a cache hit when the checkout built already),
# `tq-gguf run` on the default model and `tq-gguf verify` there; then edit one installed
# native source and see the stale-build check refuse the build. .ci/run runs this after
# `make test`.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python3}
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
cd "$scratch"
say() { echo "wheel-check: $*"; }

"$python" -m pip wheel -q --no-deps -w dist "$repo"
wheel=$(ls dist/tq_gguf-*.whl)
"$python" -m venv venv
# As the Makefile does: without its dependencies first, so pip does not build the stock
# llama-cpp-python; `tq-gguf build` installs the patched one, then the rest resolves.
venv/bin/pip install -q --disable-pip-version-check --no-deps "$wheel"
venv/bin/pip install -q --disable-pip-version-check click
venv/bin/tq-gguf build
venv/bin/pip install -q --disable-pip-version-check "$wheel"

# Everything must come from the installed package, never from a checkout.
sources=$(venv/bin/python -c 'from tq_gguf import paths; print(paths.SOURCE_ROOT)')
say "sources come from $sources"
case "$sources" in "$scratch"/venv/*) ;; *) say "the sources are not the installed package's"; exit 1 ;; esac

venv/bin/tq-gguf info | grep -E '^(native build|backend status| {18}(cuda|metal))'
venv/bin/tq-gguf run --cache q8_0/turbo3 -n 16 -p "The three primary colors are"
venv/bin/tq-gguf verify
venv/bin/python -m tq_gguf --version

# The stale-build check hashes the installed sources: one edited kernel makes the build stale.
source=$(venv/bin/python -c 'from tq_gguf import paths; print(paths.NATIVE_DIR / "tq-quants.c")')
cp "$source" saved.c
echo "/* edited */" >>"$source"
if venv/bin/tq-gguf verify >stale.out 2>&1; then
    say "an edited native source did not make the build stale"; exit 1
fi
grep -q "is stale" stale.out || { cat stale.out; exit 1; }
say "after editing $source: $(cat stale.out)"
cp saved.c "$source"
venv/bin/tq-gguf verify >/dev/null
say "the restored source is current again"
say "build, run, verify and the stale-build check passed from $wheel in $scratch"
