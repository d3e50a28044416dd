# deskbot: everything a fresh Debian machine needs is installed from here.
# The first interpreter that runs and is 3.11 or 3.12 (pyenv shims may exist but not run).
PYTHON ?= $(shell for p in python3.11 python3.12 python3; do \
  $$p -c 'import sys; sys.exit(not (3, 11) <= sys.version_info[:2] < (3, 13))' 2>/dev/null \
  && { command -v $$p; break; }; done)
VENV := .venv
BIN := $(VENV)/bin
RUN_STAMP := $(VENV)/.installed-run
TEST_STAMP := $(VENV)/.installed-test
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: test lint format demo bench deps run-deps system-deps clean image image-test

test: deps system-deps
	$(BIN)/pytest -q

lint: deps
	$(BIN)/ruff check deskbot tests bench
	$(BIN)/ruff format --check deskbot tests bench
	$(BIN)/mypy deskbot

format: deps
	$(BIN)/ruff format deskbot tests bench
	$(BIN)/ruff check --fix deskbot tests bench

demo: run-deps
	$(BIN)/deskbot demo

bench: deps system-deps
	$(BIN)/python bench/fanout.py

# run-deps: deskbot and what it needs at run time (enough for `make demo`);
# deps: that plus the test stack (pytest, Synapse, ruff, mypy, ...).
run-deps: $(RUN_STAMP)
deps: $(TEST_STAMP)

$(RUN_STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { echo "need python3.11 or python3.12 (pjsua2 wheels stop at 3.12)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e .
	touch $(RUN_STAMP)

$(TEST_STAMP): $(RUN_STAMP)
	$(BIN)/pip install -q -e '.[test]'
	touch $(TEST_STAMP)

# SIPp and baresip are the test phones, Kamailio the test PBX, Alertmanager the
# test monitoring system, slapd the test LDAP server, nats-server (JetStream) the sites'
# hub, postgresql the replicas' shared store; systemd-analyze and strace check
# deploy/systemd/, promtool (Debian's prometheus) deploy/prometheus/, Chromium is the browser
# the web console's tests drive (Playwright, from pip, cannot download its own here);
# apt-get installs whichever is missing.
system-deps:
	@missing=""; \
	command -v sipp >/dev/null || missing="$$missing sip-tester"; \
	command -v baresip >/dev/null || missing="$$missing baresip-core"; \
	command -v kamailio >/dev/null || [ -x /usr/sbin/kamailio ] || missing="$$missing kamailio"; \
	command -v prometheus-alertmanager >/dev/null || missing="$$missing prometheus-alertmanager"; \
	[ -x /usr/sbin/slapd ] || missing="$$missing slapd"; \
	command -v ldapadd >/dev/null || missing="$$missing ldap-utils"; \
	command -v nats-server >/dev/null || [ -x /usr/sbin/nats-server ] || missing="$$missing nats-server"; \
	command -v systemd-analyze >/dev/null || missing="$$missing systemd"; \
	command -v strace >/dev/null || missing="$$missing strace"; \
	command -v setpriv >/dev/null && command -v unshare >/dev/null || missing="$$missing util-linux"; \
	command -v promtool >/dev/null || missing="$$missing prometheus"; \
	[ -x /usr/bin/chromium ] || missing="$$missing chromium"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	if [ -n "$$missing" ]; then \
	  echo "installing$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	fi

# The container image without a Docker engine: buildah, podman and debootstrap are
# installed when missing, a stand-in for the base image is bootstrapped from Debian's
# mirror only when the FROM image is not in local storage (kept in .image/).
# image-test builds first only when $(IMAGE) does not exist yet.
IMAGE ?= localhost/deskbot
image:
	IMAGE=$(IMAGE) tools/image.sh build

image-test:
	IMAGE=$(IMAGE) tools/image.sh test

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache data
