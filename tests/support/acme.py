"""Fixtures for issuance against real parts: Pebble validating through CertHub's own DNS server, a real
Celery worker on Redis, MariaDB.

The DNS server's port is chosen once per session so Pebble (started once) can be pointed at it;
each test starts the server afresh on that port against its own transactional database.
"""

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from celery.contrib.testing.worker import start_worker

from acme_client import accounts
from acme_client.pebble import Pebble
from certhub.celery import app as celery_app
from certhub.ports import free_port
from dns_zones import services as zone_services
from dns_zones.server import DNSServer

DNS_HOST = "127.0.0.1"

# What tests/conftest.py imports: every fixture here, once per session for the whole suite.
__all__ = [
    "_session_celery_worker", "celery_worker", "dns_port", "dns_server", "pebble", "pebble_ari",
    "pebble_authz_reuse", "pebble_nonce_reject", "use_ca", "wait_for_state", "zones",
]  # fmt: skip

# Debian trixie's Pebble (2.6), which `make pebble-ari` unpacks and `make test` names here:
# bookworm's (2.4, the `pebble` on PATH) has no ACME Renewal Information.
PEBBLE_ARI_BIN = os.environ.get("PEBBLE_ARI_BIN") or str(
    Path(__file__).resolve().parents[2] / "var/trixie-pebble/root/usr/bin/pebble"
)


@pytest.fixture(scope="session")
def dns_port() -> int:
    return free_port(DNS_HOST)


def _pebble(tmp_path_factory, dns_port: int, name: str, env: dict[str, str]) -> Iterator[Pebble]:
    workdir: Path = tmp_path_factory.mktemp(name)
    pebble = Pebble.start(workdir, (DNS_HOST, dns_port), env=env)
    yield pebble
    pebble.stop()


@pytest.fixture(scope="session")
def pebble(tmp_path_factory, dns_port) -> Iterator[Pebble]:
    """Pebble with its default nonce rejection and validation sleeps left on (sleep capped)."""
    yield from _pebble(tmp_path_factory, dns_port, "pebble", {"PEBBLE_VA_SLEEPTIME": "1"})


@pytest.fixture(scope="session")
def pebble_nonce_reject(tmp_path_factory, dns_port) -> Iterator[Pebble]:
    yield from _pebble(
        tmp_path_factory, dns_port, "pebble-nonce", {"PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "50"}
    )


@pytest.fixture(scope="session")
def pebble_authz_reuse(tmp_path_factory, dns_port) -> Iterator[Pebble]:
    """Pebble that always hands an account back its still-valid authorizations."""
    yield from _pebble(
        tmp_path_factory, dns_port, "pebble-reuse", {"PEBBLE_VA_NOSLEEP": "1", "PEBBLE_AUTHZREUSE": "100"}
    )


@pytest.fixture(scope="session")
def pebble_ari(tmp_path_factory, dns_port) -> Iterator[Pebble]:
    """Pebble 2.6 (Debian trixie's): its directory offers `renewalInfo` and its newOrder takes and
    checks `replaces` (RFC 9773). The window is Pebble's own, not the test's: 48 hours around the
    point two thirds into the certificate's lifetime, Retry-After 6 hours; for a revoked
    certificate, a window that ended 30 minutes ago."""
    if not os.access(PEBBLE_ARI_BIN, os.X_OK):
        pytest.fail(f"no Pebble with ARI at {PEBBLE_ARI_BIN}: run `make pebble-ari` (make test does)")
    # No nonce is rejected, so a test's own requests to the CA need no retries; `pebble_nonce_reject`
    # covers CertHub's badNonce handling.
    env = {"PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0"}
    workdir: Path = tmp_path_factory.mktemp("pebble-ari")
    with Pebble.start(workdir, (DNS_HOST, dns_port), env=env, binary=PEBBLE_ARI_BIN) as pebble:
        directory = requests.get(pebble.directory_url, verify=pebble.ca_bundle, timeout=5).json()
        assert "renewalInfo" in directory, f"{PEBBLE_ARI_BIN} offers no ARI: {directory}"
        yield pebble


DNS_RELOAD_INTERVAL = 0.05


@pytest.fixture
def dns_server(transactional_db, dns_port) -> Iterator[DNSServer]:
    server = DNSServer((DNS_HOST, dns_port), reload_interval=DNS_RELOAD_INTERVAL, tcp_idle_timeout=0.5)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def use_ca(settings, dns_port):
    """Point CertHub at a Pebble and at the test DNS server; returns a function taking the Pebble."""
    settings.CERTHUB_DNS_LISTEN = (DNS_HOST, dns_port)
    settings.CERTHUB_POLL_FIRST_DELAY = 0.02
    settings.CERTHUB_DNS_RELOAD_INTERVAL = DNS_RELOAD_INTERVAL  # what the worker expects of dns_server
    settings.CERTHUB_DNS_NOTIFY = [(DNS_HOST, dns_port)]  # and whom zone changes are announced to

    def point(pebble: Pebble) -> Pebble:
        settings.ACME_DIRECTORY_URL = pebble.directory_url
        settings.ACME_CA_BUNDLE = pebble.ca_bundle
        accounts.forget_sessions()
        return pebble

    yield point
    accounts.forget_sessions()


@pytest.fixture(scope="session")
def _session_celery_worker(django_db_setup):
    # One worker for the session: starting a second in-process worker leaves it idle.
    assert celery_app.conf.broker_url.startswith("redis://"), "make test sets REDIS_URL"
    celery_app.control.purge()
    with start_worker(celery_app, pool="threads", concurrency=4, perform_ping_check=False, shutdown_timeout=10):
        yield


@pytest.fixture
def celery_worker(transactional_db, _session_celery_worker):
    """A real Celery worker (threads) consuming from Redis in this process."""
    yield
    celery_app.control.purge()


@pytest.fixture
def zones(team):
    """Two hosted zones of the owner's team."""
    return [zone_services.zone_create(team=team, name=n) for n in ("alpha.test", "beta.test")]


def wait_for_state(api, certificate_id: str, states=("verified", "error"), timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = api.get(f"/v2/certificates/{certificate_id}").json()["certificate"]
        # Verified comes one step before the challenge records are cleaned up: wait for both.
        if body["state"] in states and body["step"] in ("done", "failed"):
            return body
        time.sleep(0.05)
    raise AssertionError(f"certificate still {body['state']} at step {body['step']}: {body['last_error']}")
