# CertHub: `make run` starts everything on the embedded default, `make test` runs the suite.
SHELL := /bin/bash
PYTHON_VERSION := $(shell cat .python-version)
VENV := .venv
PY := $(VENV)/bin/python
# Debian packages: mysqlclient's build needs, the ACME test CA, DNS tools and a browser for tests.
RUN_PACKAGES := pkg-config libmariadb-dev build-essential pebble
TEST_PACKAGES := $(RUN_PACKAGES) knot knot-dnsutils dnsperf chromium chromium-driver mariadb-server redis-server
TEST_DATABASE_URL ?= mysql://root@127.0.0.1:3306/certhub
TEST_REDIS_URL ?= redis://127.0.0.1:6379/15

.PHONY: run test lint system-packages system-packages-test services

# The pinned interpreter: pyenv's build when present, else python3.12 from PATH.
PYTHON_BIN := $(firstword $(wildcard $(HOME)/.pyenv/versions/$(PYTHON_VERSION)/bin/python3) $(shell command -v python$(basename $(PYTHON_VERSION)) 2>/dev/null))

$(VENV)/.installed: requirements.txt requirements-dev.txt .python-version
	@test -n "$(PYTHON_BIN)" || { echo "Python $(PYTHON_VERSION) not found (pyenv install $(PYTHON_VERSION))"; exit 1; }
	$(PYTHON_BIN) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r requirements-dev.txt
	touch $@

system-packages:
	@missing=$$(for p in $(RUN_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; fi

system-packages-test:
	@missing=$$(for p in $(TEST_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; fi

run: system-packages $(VENV)/.installed
	mkdir -p var/broker/processed
	DEBUG=1 $(PY) manage.py migrate --noinput
	DEBUG=1 $(PY) manage.py setup_demo
	DEBUG=1 PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(VENV)/bin/honcho start -f Procfile.embedded

test: system-packages-test $(VENV)/.installed
	DEBUG=0 SECRET_KEY=test-only-secret-key-not-for-production-use-0123456789 \
	CERTHUB_ENCRYPTION_KEYS=$$($(PY) -c 'import base64; print(base64.urlsafe_b64encode(b"t"*32).decode())') \
	SECURE_SSL_REDIRECT=0 ALLOWED_HOSTS=testserver,localhost,127.0.0.1 \
	DATABASE_URL=$(TEST_DATABASE_URL) REDIS_URL=$(TEST_REDIS_URL) \
	EMAIL_BACKEND=django.core.mail.backends.locmem.EmailBackend \
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.installed
	$(PY) -m ruff check .
