# Two commands do everything (see README.md):
#   make run    set up, build the patched llama.cpp, fetch the default model, generate text
#   make test   set up, build, fetch, and run the test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PROMPT ?= The three primary colors are
CACHE_K ?= q8_0
CACHE_V ?= tcq3
PYTEST_ARGS ?=

.PHONY: setup run test build clean

# The package installs without its dependencies first: pip would otherwise build the
# stock llama-cpp-python from source. `tq-gguf build` installs our patched one, after
# which the full install finds the dependency satisfied.
$(BIN)/tq-gguf: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q click
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $@

build: $(BIN)/tq-gguf
	$(BIN)/tq-gguf build

setup: build
	$(BIN)/python -m pip install -q -e '.[test]'
	$(BIN)/tq-gguf models fetch smollm2-135m

run: setup
	$(BIN)/tq-gguf run --cache-k $(CACHE_K) --cache-v $(CACHE_V) -n 64 -p "$(PROMPT)"

test: setup
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
