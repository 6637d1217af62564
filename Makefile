# The two commands of README.md: `make demo` and `make test`. Each sets up .venv itself on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml requirements/dev.txt | sha256sum | cut -c1-12)

.PHONY: demo test install lock clean
CHECKOV := infra/.tools/checkov/bin/checkov

# Every package from the lock (pinned, hash-checked); then edgerec itself, editable, with nothing resolved anew.
$(STAMP): pyproject.toml requirements/dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements/dev.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	rm -f $(VENV)/.installed-* && touch $(STAMP)

install: $(STAMP)

# Re-resolve requirements/*.txt after a change to pyproject.toml (scripts/lock.sh --upgrade moves every pin).
lock: $(STAMP)
	bash scripts/lock.sh

demo: $(STAMP)
	$(BIN)/edgerec demo

# checkov lives in its own venv: its pins (packaging<24) conflict with pytest's.
$(CHECKOV): infra/tools/install-checkov.sh
	PYTHON=$(PYTHON) bash infra/tools/install-checkov.sh

# Debian's packages, for the tools below.
APT_INSTALL := apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends

# Varnish (Debian's package) is the CDN the edge's cache behaviour is tested behind.
VARNISHD := /usr/sbin/varnishd
$(VARNISHD):
	$(APT_INSTALL) varnish

# wrk (Debian's package): the latency benchmark's cross-check and fixed-rate load, run by its smoke test.
WRK := /usr/bin/wrk
$(WRK):
	$(APT_INSTALL) wrk

# HAProxy (Debian's package): the load balancer with health checks in front of the edges in the availability drill.
HAPROXY := /usr/sbin/haproxy
$(HAPROXY):
	$(APT_INSTALL) haproxy

# Prometheus (Debian's package): promtool checks and unit-tests the SLO rules and the compose stack's scrape
# configuration; the server runs the scrape test.
PROMTOOL := /usr/bin/promtool
$(PROMTOOL):
	$(APT_INSTALL) prometheus

# EDGEREC_INFRA_STRICT=1: a missing tool (checkov, varnishd, wrk, haproxy, promtool, kubectl) fails the run instead of
# skipping.
test: $(STAMP) $(CHECKOV) $(VARNISHD) $(WRK) $(HAPROXY) $(PROMTOOL)
	bash scripts/test-services.sh
	bash scripts/lock.sh --check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy
	EDGEREC_INFRA_STRICT=1 $(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) .pytest_cache infra/.tools
