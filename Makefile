# The two commands of the README: `make demo` and `make test`. Both set up
# everything they need (Debian packages, a Docker engine, the venv).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint unit integration e2e e2e-kind cluster bench protos host clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

host:
	bash scripts/ensure-host.sh

demo: host $(STAMP)
	$(BIN)/python -m nodeload.sandbox.demo $(if $(KEEP),--keep)

lint: $(STAMP)
	$(BIN)/ruff check nodeload tests benchmarks scripts
	$(BIN)/ruff format --check nodeload tests benchmarks scripts
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest -q tests/unit

integration: host $(STAMP)
	$(BIN)/pytest -q tests/integration

e2e: host $(STAMP)
	$(BIN)/pytest -q tests/e2e

# Creates a kind cluster (kind-config.yaml), pushes with --all-nodes, runs a Pod per node with
# imagePullPolicy: Never, deletes the cluster. Skipped, with the reason, where kind is missing.
e2e-kind: host $(STAMP)
	$(BIN)/pytest -q -ra tests/kind

# A real Kubernetes (nodeload.sandbox.k8s): built once from Debian's source package (10-15 minutes,
# cached in ~/.cache/nodeload/k8s), a 2-node cluster for the session. In `make test` it runs last,
# the build running in the background while the other suites do.
cluster: host $(STAMP)
	$(BIN)/pytest -q -ra tests/cluster

test: host $(STAMP) lint
	$(BIN)/pytest -q -ra tests

bench: host $(STAMP)
	$(BIN)/python -m benchmarks.bench --markdown

# The gRPC modules, from the pinned generator (pyproject's protos group) in a venv of its own.
protos:
	test -x .venv-protos/bin/python || $(PYTHON) -m venv .venv-protos
	.venv-protos/bin/pip install -q --upgrade pip
	.venv-protos/bin/pip install -q --group protos
	.venv-protos/bin/python scripts/gen_protos.py

clean:
	rm -rf $(VENV) .venv-protos .mypy_cache .ruff_cache .pytest_cache
