# StoryShort preview images. `make run` starts everything; `make test` runs the tests.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PROTOS := $(wildcard protos/storyshort/*/v1/*.proto)
GEN_DIR := storyshort

.PHONY: all venv lock run test test-matrix test-client client-types test-quick coverage coverage-all coverage-report lint format protos protos-check clean migrate migrate-storage-policy demo bench bench-quick mutants ci

all: venv

# The virtual environment, rebuilt whenever the lock file changes.
$(STAMP): requirements.lock
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.lock
	@touch $(STAMP)

venv: $(STAMP)

# Regenerate the lock files from pyproject.toml (needs the network): requirements.lock has
# everything (the venv, CI), requirements-runtime.lock the same versions of what the services
# need (the Docker image).
lock: $(STAMP)
	$(PY) -m pip install --quiet pip-tools
	$(VENV)/bin/pip-compile --quiet --extra dev --strip-extras -o requirements.lock pyproject.toml
	$(VENV)/bin/pip-compile --quiet --strip-extras -c requirements.lock -o requirements-runtime.lock pyproject.toml

# Generated gRPC code: one package, `storyshort/`, never edited by hand.
protos: $(STAMP)
	$(PY) -m tools.gen_protos $(GEN_DIR)

# Fails when the committed generated code differs from what `make protos` makes.
protos-check: $(STAMP)
	$(PY) -m tools.gen_protos --check $(GEN_DIR)

migrate: $(STAMP)
	$(PY) -m services.status.migrate

migrate-storage-policy: $(STAMP)
	$(PY) -m services.status.migrate --storage-policy

run: $(STAMP)
	$(PY) -m tools.run_local

# The gateway of `make run` (GATEWAY_PORT, as it was started), or `make demo URL=http://...`.
demo: $(STAMP)
	$(PY) -m tools.demo $(if $(URL),--url $(URL),)

test: $(STAMP)
	$(PY) -m pytest -m "not matrix"

test-matrix: $(STAMP)
	$(PY) -m pytest -m matrix

# Line and branch coverage of services/ and gateway/ across every process the tests start.
# Lines and branches of every process the tests start; each package must keep 90%.
COVERAGE_FLOOR ?= 90
coverage: $(STAMP)
	rm -rf .coverage-data && mkdir -p .coverage-data
	$(PY) -m coverage run -m pytest -m "not matrix" -q
	$(MAKE) --no-print-directory coverage-report

coverage-all: $(STAMP)
	rm -rf .coverage-data && mkdir -p .coverage-data
	$(PY) -m coverage run -m pytest -q
	$(MAKE) --no-print-directory coverage-report

coverage-report:
	$(PY) -m coverage combine -q
	$(PY) -m coverage report --include='services/*' --sort=cover --fail-under=$(COVERAGE_FLOOR)
	$(PY) -m coverage report --include='gateway/*' --sort=cover --fail-under=$(COVERAGE_FLOOR)

# The TypeScript client (clients/typescript): its npm packages from the lock file, its types
# from the gateway's /openapi.json, its tests against a real gateway and in Chromium.
CLIENT := clients/typescript
CLIENT_DEPS := $(CLIENT)/node_modules/.installed

$(CLIENT_DEPS): $(CLIENT)/package-lock.json
	cd $(CLIENT) && npm ci --no-audit --no-fund --silent
	@touch $@

client-types: $(STAMP) $(CLIENT_DEPS)
	cd $(CLIENT) && node scripts/types.mjs

test-client: $(STAMP) $(CLIENT_DEPS)
	cd $(CLIENT) && npm run --silent typecheck && npm run --silent build
	cd $(CLIENT) && node scripts/types.mjs --check
	cd $(CLIENT) && npm test

test-quick: $(STAMP)
	$(PY) -m pytest -m "not slow and not matrix"

# buf (the contracts' lint and breaking-change check) from the @bufbuild/buf npm package.
BUF_VERSION := 1.75.0
BUF := .tools/node_modules/.bin/buf
# What `buf breaking` compares the contracts with: the commit before this one, by default.
BUF_AGAINST ?= HEAD~1

$(BUF):
	mkdir -p .tools
	cd .tools && npm install --no-save --no-audit --no-fund --silent @bufbuild/buf@$(BUF_VERSION)

lint: $(STAMP) $(BUF)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(BUF) lint protos
	@if git rev-parse --verify --quiet $(BUF_AGAINST) >/dev/null; then \
		echo "$(BUF) breaking protos --against .git#ref=$(BUF_AGAINST),subdir=protos"; \
		$(BUF) breaking protos --against '.git#ref=$(BUF_AGAINST),subdir=protos'; \
	else echo "buf breaking: no $(BUF_AGAINST) to compare with; skipped"; fi

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: $(STAMP)
	$(PY) -m bench.run

bench-quick: $(STAMP)
	$(PY) -m bench.run --quick

mutants: $(STAMP)
	$(PY) -m tools.mutants

ci: lint protos-check test

clean:
	rm -rf $(VENV) .tools .pytest_cache .mypy_cache .ruff_cache data
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
