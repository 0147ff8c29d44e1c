"""Certificates to record events about, and Redis streams and servers owned by one test.

Streams live on the suite's Redis (REDIS_URL, set by `make test`) under names unique to the test,
deleted afterwards; outage tests start their own redis-server so the shared one keeps running.
"""

import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest
import redis
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from django.conf import settings
from django.utils import timezone

from certhub.models import Team
from certhub.ports import free_port
from certificates.models import Certificate, CertificateVersion

REDIS_HOST = "127.0.0.1"


def make_certificate(team: Team, name: str = "www") -> Certificate:
    dns_names = [f"{name}.example.test"]
    return Certificate.objects.create(team=team, name=name, dns_names=dns_names, names_key=" ".join(dns_names))


def make_version(certificate: Certificate, serial: str = "01") -> CertificateVersion:
    key_pem = (
        ec.generate_private_key(ec.SECP256R1())
        .private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        .decode()
    )
    now = timezone.now()
    return CertificateVersion.objects.create(
        certificate=certificate,
        serial=serial,
        not_before=now,
        not_after=now + timedelta(days=90),
        renew_at=now + timedelta(days=60),
        key_type="ecdsa-p256",
        sha1_fingerprint="a1" * 20,
        sha256_fingerprint="b2" * 32,
        leaf_pem="-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        private_key_pem=key_pem,
    )


@pytest.fixture
def certificate(team) -> Certificate:
    return make_certificate(team)


@pytest.fixture
def shared_redis() -> redis.Redis:
    assert settings.REDIS_URL, "make test sets REDIS_URL"
    return redis.Redis.from_url(settings.REDIS_URL, decode_responses=True)


@pytest.fixture
def stream(shared_redis) -> Iterator[str]:
    """A stream name of this test's own on the shared Redis."""
    name = f"test.certhub.certificates.{uuid.uuid4().hex}"
    yield name
    shared_redis.delete(name)


class RedisServer:
    """A redis-server of the test's own, without persistence, that can be stopped and restarted."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"redis://{REDIS_HOST}:{port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--bind", REDIS_HOST, "--port", str(self.port), "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
        )
        probe = redis.Redis(host=REDIS_HOST, port=self.port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 10
        while True:
            try:
                probe.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
            finally:
                probe.close()

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer(free_port(REDIS_HOST))
    server.start()
    yield server
    server.stop()
