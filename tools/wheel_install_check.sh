#!/usr/bin/env bash
# The package works outside a checkout: build the wheel, install it into a scratch venv in
# a scratch folder, and run `tq-gguf build` (a cache hit when the checkout built already),
# `tq-gguf run` and `tq-gguf verify` there. .ci/run runs this after `make test`.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python3}
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
cd "$scratch"

"$python" -m pip wheel -q --no-deps -w dist "$repo"
wheel=$(ls dist/tq_gguf-*.whl)
"$python" -m venv venv
# As the Makefile does: without its dependencies first, so pip does not build the stock
# llama-cpp-python; `tq-gguf build` installs the patched one, then the rest resolves.
venv/bin/pip install -q --disable-pip-version-check --no-deps "$wheel"
venv/bin/pip install -q --disable-pip-version-check click
venv/bin/tq-gguf build
venv/bin/pip install -q --disable-pip-version-check "$wheel"

echo "wheel-check: sources come from $(venv/bin/python -c 'from tq_gguf import paths; print(paths.SOURCE_ROOT)')"
[ -e "$scratch/patches" ] && { echo "wheel-check: a checkout is in the scratch folder"; exit 1; }
venv/bin/tq-gguf run smollm2-135m --cache q8_0/turbo3 -n 16 -p "The three primary colors are"
venv/bin/tq-gguf verify
echo "wheel-check: build, run and verify passed from $wheel in $scratch"
