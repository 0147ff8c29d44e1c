"""A running authoritative DNS server, for tests that send it real queries."""

from collections.abc import Iterator

import pytest

from dns_zones.server import DNSServer


@pytest.fixture
def dns_server(transactional_db) -> Iterator[DNSServer]:
    """The server on a free loopback port, polling the test database every 50 ms."""
    server = DNSServer(("127.0.0.1", 0), reload_interval=0.05, tcp_idle_timeout=0.5)
    server.start()
    yield server
    server.stop()
