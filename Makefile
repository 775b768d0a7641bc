# Two commands set everything up on a fresh machine: `make run` and `make test`.
# Each bootstraps uv when missing, then installs the locked environment (uv.lock).
SHELL := /bin/bash
UV := $(or $(shell command -v uv 2>/dev/null),$(HOME)/.local/bin/uv)
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home
# Two test processes, a test file each at a time: most tests wait on real servers, so two
# halve the suite's time on this 2-core machine (one file's tests share its fixtures).
PYTEST_WORKERS ?= -n 2 --dist loadfile

.PHONY: run test test-quick lint env

$(HOME)/.local/bin/uv:
	python3 -m pip install --quiet --user uv \
		|| python3 -m pip install --quiet --user --break-system-packages uv

env: | $(UV)
	$(UV) sync --frozen --all-extras
	@mkdir -p "$(DAGSTER_HOME)" && cp dagster.yaml "$(DAGSTER_HOME)/dagster.yaml"

run: env
	.venv/bin/python -m lake_platform.commands.run

test: env
	.venv/bin/ruff check lake_platform lake_platform_tests benchmarks compat fuzz
	.venv/bin/pytest $(PYTEST_WORKERS)

test-quick: env
	.venv/bin/pytest $(PYTEST_WORKERS) -m "not slow" -x -q

lint: env
	.venv/bin/ruff check lake_platform lake_platform_tests benchmarks compat fuzz
	.venv/bin/ruff format --check lake_platform lake_platform_tests benchmarks compat fuzz
