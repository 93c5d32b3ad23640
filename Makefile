# moments: two commands for a new user (make demo, make test); the rest for developers.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The locked dependencies and moments in pure Python (quick: what `make demo` needs), then
# the mypyc build of the hot paths on top (minutes: what `make test`, `make bench` and the
# production image run; setup.py, MOMENTS_PURE_PYTHON).
STAMP := $(VENV)/.installed
COMPILED_STAMP := $(VENV)/.compiled
BENCH_STAMP := $(VENV)/.installed-bench
# The locks (make lock): every dependency pinned, for `make install` (dev) and `make bench`.
LOCK := requirements/dev.txt
BENCH_LOCK := requirements/bench.txt
# The production image's lock (deploy/Dockerfile): no extras, hashed, the dev lock's versions.
PROD_LOCK := requirements/prod.txt

.PHONY: install demo test lint format soak bench lock clean

install: $(COMPILED_STAMP)

# The locked dependencies (with the build requirements), then the project itself in pure
# Python (same code, same results; the compile is the next step).
$(STAMP): pyproject.toml setup.py $(LOCK)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -r $(LOCK)
	MOMENTS_PURE_PYTHON=1 $(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

# The project built against the locked dependencies with the optional mypyc build of setup.py.
$(COMPILED_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(COMPILED_STAMP)

# Regenerate the locks from pyproject.toml ([build-system] requires + dependencies + extras).
# Pins stay as they are unless a constraint forces a change; to upgrade one package:
# make lock UPGRADE='--upgrade-package NAME' (or UPGRADE=--upgrade for all).
LOCK_FLAGS = --quiet --universal --python-version 3.11 $(UPGRADE)
BUILD_REQUIRES = $(BIN)/python -c 'import tomllib; print(*tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"], sep="\n")'
lock: $(STAMP)
	$(BUILD_REQUIRES) | $(BIN)/uv pip compile $(LOCK_FLAGS) --extra dev -o $(LOCK) pyproject.toml -
	$(BUILD_REQUIRES) | $(BIN)/uv pip compile $(LOCK_FLAGS) --extra dev --extra bench -o $(BENCH_LOCK) pyproject.toml -
	$(BUILD_REQUIRES) | $(BIN)/uv pip compile $(LOCK_FLAGS) --generate-hashes -c $(LOCK) -o $(PROD_LOCK) pyproject.toml -

# The demo runs in pure Python: a fresh clone shows its first output without waiting for the
# compile (`make install` compiles; `make test` compiles first, so it tests the compiled code).
demo: $(STAMP)
	$(BIN)/moments demo

test: $(COMPILED_STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

soak: $(STAMP)
	$(BIN)/python -m pytest -q -m soak -s --timeout=5400

$(BENCH_STAMP): $(COMPILED_STAMP) $(BENCH_LOCK)
	$(BIN)/python -m pip install --quiet -r $(BENCH_LOCK)
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/moments bench

clean:
	rm -rf $(VENV) .moments .pytest_cache .mypy_cache .ruff_cache
