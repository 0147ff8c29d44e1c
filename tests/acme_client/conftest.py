"""Real Pebble instances, with pebble-challtestsrv as their DNS server, and a tiny stub CA.

pebble-challtestsrv keeps these tests independent of CertHub's own DNS server: the tests publish
challenge TXT records through its management API. Each Pebble variant starts once per session.
"""

import json
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from josepy import JWKEC

from acme_client.pebble import Pebble
from acme_client.protocol import AcmeSession
from certhub.ports import free_port
from tests.support.stub_ca import StubCA


class ChallTestSrv:
    """pebble-challtestsrv serving DNS only; TXT records are added through its management API."""

    def __init__(self, dns_port: int, management_port: int, log_path: Path) -> None:
        self.dns_address = ("127.0.0.1", dns_port)
        self.management_url = f"http://127.0.0.1:{management_port}"
        with log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    "pebble-challtestsrv",
                    "-dns01",
                    f"127.0.0.1:{dns_port}",
                    "-management",
                    f"127.0.0.1:{management_port}",
                    "-http01",
                    "",
                    "-https01",
                    "",
                    "-tlsalpn01",
                    "",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        _wait_for_port(management_port, self.process)

    def set_txt(self, name: str, value: str) -> None:
        """Add a TXT value at ``name``; values for one name accumulate."""
        self._post("/set-txt", {"host": name.rstrip(".") + ".", "value": value})

    def clear_txt(self, name: str) -> None:
        self._post("/clear-txt", {"host": name.rstrip(".") + "."})

    def _post(self, path: str, body: dict) -> None:
        request = urllib.request.Request(self.management_url + path, data=json.dumps(body).encode(), method="POST")
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status == 200

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=5)


def _wait_for_port(port: int, process: subprocess.Popen, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while True:
        assert process.poll() is None, "pebble-challtestsrv exited"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            assert time.monotonic() < deadline, f"nothing listens on port {port}"
            time.sleep(0.02)


@pytest.fixture(scope="session")
def challtestsrv(tmp_path_factory) -> Iterator[ChallTestSrv]:
    server = ChallTestSrv(free_port(), free_port(), tmp_path_factory.mktemp("challtestsrv") / "log")
    yield server
    server.stop()


def _pebble(tmp_path_factory, challtestsrv: ChallTestSrv, env: dict[str, str], **options) -> Iterator[Pebble]:
    pebble = Pebble.start(tmp_path_factory.mktemp("pebble"), challtestsrv.dns_address, env=env, **options)
    yield pebble
    pebble.stop()


@pytest.fixture(scope="session")
def pebble(tmp_path_factory, challtestsrv) -> Iterator[Pebble]:
    """Pebble validating at once, rejecting its default 5% of good nonces."""
    yield from _pebble(tmp_path_factory, challtestsrv, {"PEBBLE_VA_NOSLEEP": "1"})


@pytest.fixture(scope="session")
def pebble_nonce_reject(tmp_path_factory, challtestsrv) -> Iterator[Pebble]:
    """Pebble rejecting half of all good nonces."""
    yield from _pebble(tmp_path_factory, challtestsrv, {"PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "50"})


@pytest.fixture(scope="session")
def pebble_va_sleep(tmp_path_factory, challtestsrv) -> Iterator[Pebble]:
    """Pebble with its validation sleep on (random, capped at 2 s instead of 15 s to keep the suite short)."""
    yield from _pebble(tmp_path_factory, challtestsrv, {"PEBBLE_VA_SLEEPTIME": "2"})


EAB_KID = "kid-1"
EAB_HMAC_KEY = "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W"  # Pebble's example


@pytest.fixture(scope="session")
def pebble_eab(tmp_path_factory, challtestsrv) -> Iterator[Pebble]:
    """Pebble requiring External Account Binding with one key."""
    yield from _pebble(tmp_path_factory, challtestsrv, {"PEBBLE_VA_NOSLEEP": "1"}, eab_keys={EAB_KID: EAB_HMAC_KEY})


def new_session(pebble: Pebble) -> AcmeSession:
    """Return a session for a fresh P-256 account key, registered at ``pebble``."""
    session = AcmeSession(
        pebble.directory_url, JWKEC(key=ec.generate_private_key(ec.SECP256R1())), ca_bundle=pebble.ca_bundle
    )
    session.register("ops@example.test")
    return session


@pytest.fixture
def acme(pebble) -> AcmeSession:
    return new_session(pebble)


@pytest.fixture
def stub_ca() -> Iterator[StubCA]:
    stub = StubCA()
    stub.route(
        "GET",
        "/dir",
        body={
            "newNonce": f"{stub.url}/nonce",
            "newAccount": f"{stub.url}/account",
            "newOrder": f"{stub.url}/order",
            "renewalInfo": f"{stub.url}/ari",
        },
    )
    stub.route("HEAD", "/nonce")
    yield stub
    stub.stop()


def poll(fetch: Callable[[], object], done: Callable[[object], bool], timeout: float = 10) -> object:
    """Call ``fetch`` at 20 ms growing intervals until ``done`` holds; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    delay = 0.02
    while True:
        value = fetch()
        if done(value):
            return value
        assert time.monotonic() < deadline, f"still {value!r} after {timeout} s"
        time.sleep(delay)
        delay = min(delay * 1.5, 0.5)
