# Two commands on a fresh machine: `make run` and `make test` (README.md).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DATA ?= var
PKI ?= $(DATA)/pki
HOUSEHOLDS ?= 10000
STAMP := $(VENV)/.installed

.PHONY: install run test lint lowest proto proto-lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

install: $(STAMP)

$(DATA)/registry.sqlite: | $(STAMP)
	$(BIN)/jisr demo-data --households $(HOUSEHOLDS) --seed 1 --data-dir $(DATA)

# A development PKI: gateway CA, server certificate, receipt key, the DEMO institution
# that `jisr call` uses, and the CNDP (the regulator's console login). Keys are
# unencrypted on disk: for development only.
$(PKI)/ca.crt: | $(STAMP)
	$(BIN)/jisr pki --dir $(PKI) init
	$(BIN)/jisr pki --dir $(PKI) issue DEMO

# Their own targets, so that a PKI made before the console and the portal gains the
# CNDP's (the regulator's console login) and the ANR's (the citizen portal) credentials.
$(PKI)/institutions/CNDP/tls.crt: | $(PKI)/ca.crt
	$(BIN)/jisr pki --dir $(PKI) issue CNDP

$(PKI)/institutions/ANR/tls.crt: | $(PKI)/ca.crt
	$(BIN)/jisr pki --dir $(PKI) issue ANR

# The DCI facade's development client: DEMO's OAuth2 client `demo`, its secret kept here
# for the examples of docs/dci.md (development only).
$(DATA)/dci-demo.secret: | $(STAMP) $(DATA)/registry.sqlite
	umask 077; $(BIN)/jisr dci client add demo --institution DEMO --data-dir $(DATA) > $@.tmp
	mv $@.tmp $@

## Serve the gateway with mTLS on 127.0.0.1:50051 over the synthetic registry, the DPO
## console on http://127.0.0.1:8080/ (development logins printed at start), the citizen
## portal on http://127.0.0.1:8081/ (development sign-in) and the DCI facade on
## http://127.0.0.1:8090/ (docs/dci.md); Ctrl-C stops all four.
run: $(STAMP) $(DATA)/registry.sqlite $(PKI)/ca.crt $(PKI)/institutions/CNDP/tls.crt \
     $(PKI)/institutions/ANR/tls.crt $(DATA)/dci-demo.secret
	$(BIN)/jisr console serve --listen 127.0.0.1:8080 --gateway 127.0.0.1:50051 \
	  --pki-dir $(PKI) --state-dir $(DATA) --dev-accounts & console=$$!; \
	$(BIN)/jisr portal serve --listen 127.0.0.1:8081 --gateway 127.0.0.1:50051 \
	  --pki-dir $(PKI) --dev-login & portal=$$!; \
	$(BIN)/jisr dci serve --listen 127.0.0.1:8090 --data-dir $(DATA) --pki-dir $(PKI) & dci=$$!; \
	trap 'kill $$console $$portal $$dci 2>/dev/null; wait $$console $$portal $$dci' EXIT INT TERM; \
	$(BIN)/jisr serve --data-dir $(DATA) --pki-dir $(PKI) --health-listen 127.0.0.1:8071

## The whole test suite (unit, then integration with real server processes), with line
## coverage of the hand-written code, the gateway and backend subprocesses included.
test: $(STAMP)
	rm -f .coverage .coverage.*
	$(BIN)/coverage run -m pytest
	$(BIN)/coverage combine -q
	$(BIN)/coverage report

lint: $(STAMP) proto-lint
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

## pyproject.toml's lower bounds hold: every direct dependency at its floor in a fresh venv
## (a "lowest-direct" install), then the imports, unit tests, ruff and mypy (.ci/lowest_direct.py).
lowest:
	$(PYTHON) .ci/lowest_direct.py

## Regenerate gateway/pb from proto/ (a test fails when the committed code is stale).
proto: $(STAMP)
	$(BIN)/python proto/generate.py

proto-lint: $(STAMP)
	$(BIN)/python proto/buf_deps.py build/googleapis
	$(BIN)/buf lint

## Throughput against echo baselines, batch, audit, consent; then tracing off vs on.
bench: $(STAMP)
	$(BIN)/python -m bench.run --pin

clean:
	rm -rf build .pytest_cache .mypy_cache .ruff_cache .coverage .coverage.*
