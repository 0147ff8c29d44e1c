# CertHub: `make run` starts everything on the embedded default, `make test` runs the suite.
SHELL := /bin/bash
PYTHON_VERSION := $(shell cat .python-version)
VENV := .venv
PY := $(VENV)/bin/python
# Debian packages: the venv module and headers for the stock python3, mysqlclient's build needs,
# the ACME test CA, the load balancer and CDN edge nodes, DNS tools and a browser for tests.
RUN_PACKAGES := python3-venv python3-dev pkg-config libmariadb-dev build-essential pebble haproxy nginx
TEST_PACKAGES := $(RUN_PACKAGES) knot knot-dnsutils dnsperf chromium chromium-driver mariadb-server redis-server
TEST_DATABASE_URL ?= mysql://root@127.0.0.1:3306/certhub
TEST_REDIS_URL ?= redis://127.0.0.1:6379/15

.PHONY: run test lint system-packages system-packages-test pebble-ari services FORCE

# Supported interpreters: 3.11 (the code uses datetime.UTC and typing.Self) up to 3.13 (Django 5.2's newest).
SUPPORTED_PYTHONS := 3.11, 3.12 or 3.13
PY_SUPPORTED := import sys; sys.exit(not (3, 11) <= sys.version_info[:2] <= (3, 13))
# The interpreter: pyenv's pinned build when present, else python3.12 from PATH, else python3 when
# supported (stock Debian 12 and 13); `make run PYTHON=/path/to/python` overrides. The real path
# is printed, not a pyenv shim's.
FIND_PYTHON := for p in $(HOME)/.pyenv/versions/$(PYTHON_VERSION)/bin/python3 python3.12 python3; do \
	"$$p" -c '$(PY_SUPPORTED)' 2>/dev/null && { "$$p" -c 'import sys; print(sys.executable)'; break; }; done
ifeq ($(origin PYTHON),undefined)
# Looked for again while not found: on a minimal Debian, system-packages installs python3 first.
PYTHON = $(or $(FOUND_PYTHON),$(eval FOUND_PYTHON := $(shell $(FIND_PYTHON)))$(FOUND_PYTHON))
endif

# A venv belongs to one interpreter: rebuild it when its base (prefix and X.Y) is not PYTHON's.
PY_IDENTITY := import sys; print(sys.base_prefix, "%d.%d" % sys.version_info[:2])
PYTHON_IDENTITY := $(shell "$(PYTHON)" -c '$(PY_IDENTITY)' 2>/dev/null)
VENV_IDENTITY := $(shell "$(PY)" -c '$(PY_IDENTITY)' 2>/dev/null)
ifneq ($(PYTHON_IDENTITY),$(VENV_IDENTITY))
$(VENV)/.installed: FORCE
endif

$(VENV)/.installed: requirements.txt requirements-dev.txt .python-version
	@test -n "$(PYTHON)" || { echo "No Python $(SUPPORTED_PYTHONS) found: pyenv install $(PYTHON_VERSION)," \
	  "apt-get install python3 python3-venv, or make PYTHON=/path/to/python3.X" >&2; exit 1; }
	@"$(PYTHON)" -c '$(PY_SUPPORTED)' || { echo "PYTHON=$(PYTHON) is not Python $(SUPPORTED_PYTHONS)" >&2; exit 1; }
	"$(PYTHON)" -m venv --clear $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r requirements-dev.txt
	touch $@

FORCE:

system-packages:
	@missing=$$(for p in $(RUN_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; fi

system-packages-test:
	@missing=$$(for p in $(TEST_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; fi

# Pebble with ACME Renewal Information (RFC 9773) for the ARI tests: bookworm's pebble (2.4) has
# none, trixie's (2.6) has it. Its .deb is fetched from the machine's own Debian mirror (the source
# of its release's suite; TRIXIE_MIRROR=URL overrides) with apt lists private to this download, so
# the system's apt sources stay as they are, and unpacked here. apt checks the trixie InRelease
# against the Debian archive keyring, the Packages index against it and the .deb against the index.
PEBBLE_ARI_DIR := var/trixie-pebble
PEBBLE_ARI := $(PEBBLE_ARI_DIR)/root/usr/bin/pebble
DEBIAN_KEYRING := /usr/share/keyrings/debian-archive-keyring.gpg
FIND_DEBIAN_MIRROR := apt-get indextargets --no-release-info --format '$$(REPO_URI) $$(RELEASE)' | \
	awk -v codename="$$(. /etc/os-release && echo "$$VERSION_CODENAME")" '$$2 == codename { print $$1; exit }'
TRIXIE_APT_DIR := $(CURDIR)/$(PEBBLE_ARI_DIR).tmp/apt
TRIXIE_APT := -o Dir::Etc::SourceList=$(TRIXIE_APT_DIR)/trixie.sources -o Dir::Etc::SourceParts=$(TRIXIE_APT_DIR)/parts \
	-o Dir::State::Lists=$(TRIXIE_APT_DIR)/lists -o Dir::Cache=$(TRIXIE_APT_DIR)/cache -o APT::Sandbox::User=root

pebble-ari: $(PEBBLE_ARI)

$(PEBBLE_ARI):
	@set -euo pipefail; tmp=$(PEBBLE_ARI_DIR).tmp; rm -rf "$$tmp" $(PEBBLE_ARI_DIR); \
	mirror="$(or $(TRIXIE_MIRROR),$$($(FIND_DEBIAN_MIRROR)))"; \
	test -n "$$mirror" || { echo "no Debian mirror in the apt sources: make pebble-ari TRIXIE_MIRROR=URL" >&2; exit 1; }; \
	mkdir -p $(TRIXIE_APT_DIR)/lists/partial $(TRIXIE_APT_DIR)/cache/archives/partial $(TRIXIE_APT_DIR)/parts; \
	printf 'Types: deb\nURIs: %s\nSuites: trixie\nComponents: main\nSigned-By: %s\n' \
	  "$$mirror" $(DEBIAN_KEYRING) > $(TRIXIE_APT_DIR)/trixie.sources; \
	apt-get $(TRIXIE_APT) --error-on=any -q update; \
	(cd "$$tmp" && apt-get $(TRIXIE_APT) -q download pebble/trixie); \
	deb=$$(echo "$$tmp"/pebble_*.deb); version=$$(dpkg-deb -f "$$deb" Version); \
	dpkg --compare-versions "$$version" ge 2.6 || { echo "trixie's pebble is $$version: no ARI before 2.6" >&2; exit 1; }; \
	dpkg-deb -x "$$deb" "$$tmp/root"; \
	"$$tmp/root/usr/bin/pebble" -version >/dev/null; \
	rm -rf "$$tmp/apt"; mv "$$tmp" $(PEBBLE_ARI_DIR); \
	echo "$(PEBBLE_ARI): pebble $$version from $$mirror trixie"

run: system-packages $(VENV)/.installed
	mkdir -p var/broker/processed
	DEBUG=1 $(PY) manage.py migrate --noinput
	DEBUG=1 $(PY) manage.py setup_demo
	DEBUG=1 PATH=$(abspath $(VENV))/bin:$$PATH $(VENV)/bin/honcho start -f Procfile.embedded

test: system-packages-test $(VENV)/.installed pebble-ari
	PEBBLE_ARI_BIN=$(abspath $(PEBBLE_ARI)) DEBUG=0 SECRET_KEY=test-only-secret-key-not-for-production-use-0123456789 \
	CERTHUB_ENCRYPTION_KEYS=$$($(PY) -c 'import base64; print(base64.urlsafe_b64encode(b"t"*32).decode())') \
	SECURE_SSL_REDIRECT=0 ALLOWED_HOSTS=testserver,localhost,127.0.0.1 \
	CERTHUB_ALLOW_PRIVATE_TARGETS=1 \
	DATABASE_URL=$(TEST_DATABASE_URL) REDIS_URL=$(TEST_REDIS_URL) \
	EMAIL_BACKEND=django.core.mail.backends.locmem.EmailBackend \
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.installed
	$(PY) -m ruff check .
