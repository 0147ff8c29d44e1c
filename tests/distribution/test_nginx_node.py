"""A real nginx edge on loopback: SNI picks each site's certificate, requests reach the origin, a reload per batch."""

import http.client
import http.server
import random
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509

from certhub.ports import free_port
from distribution.nodes.nginx import NginxError, NginxNode, Site, render_main_config
from tests.support.pki import Issued, make_ca, make_leaf

TIMEOUT = 5  # seconds, for every client socket


@dataclass
class Pki:
    root: Issued
    intermediate: Issued

    def issue(self, *names: str) -> tuple[Issued, str]:
        """A leaf for names and its full chain (leaf, then intermediate)."""
        leaf = make_leaf(self.intermediate, list(names))
        return leaf, leaf.pem + self.intermediate.pem


@dataclass
class Origin:
    """A plain-HTTP origin that records each request's path and Host header."""

    server: http.server.ThreadingHTTPServer
    requests: list[tuple[str, str]] = field(default_factory=list)
    server_names: list[str] = field(default_factory=list)  # SNI seen, when it speaks TLS
    slow_started: threading.Event = field(default_factory=threading.Event)
    slow_release: threading.Event = field(default_factory=threading.Event)

    @property
    def address(self) -> str:
        return f"{self.server.server_address[0]}:{self.server.server_address[1]}"


def _start_origin(tls: ssl.SSLContext | None = None, host: str = "127.0.0.1") -> Origin:
    origin: Origin

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            origin.requests.append((self.path, self.headers["Host"]))
            if self.path == "/slow":  # held open until the test releases it
                origin.slow_started.set()
                origin.slow_release.wait(timeout=10)
            body = f"origin says {self.path}".encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer((host, 0), Handler)
    origin = Origin(server)
    if tls is not None:
        tls.sni_callback = lambda sock, name, ctx: origin.server_names.append(name)
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return origin


@pytest.fixture(scope="module")
def pki() -> Pki:
    root = make_ca("Edge Test Root")
    return Pki(root, make_ca("Edge Test Intermediate", issuer=root))


@pytest.fixture
def client(pki) -> ssl.SSLContext:
    """A client trusting only the test root: checks chain and name on every handshake."""
    return ssl.create_default_context(cadata=pki.root.pem)


@pytest.fixture
def ip() -> str:
    return f"127.0.12.{random.randint(2, 254)}"


@pytest.fixture
def edge(tmp_path) -> Iterator[NginxNode]:
    node = NginxNode.start(tmp_path / "edge", worker_processes=2)
    yield node
    node.stop()


@pytest.fixture
def origin() -> Iterator[Origin]:
    origin = _start_origin()
    yield origin
    origin.server.shutdown()
    origin.server.server_close()


def add_site(
    node: NginxNode, pki: Pki, name: str, ip: str, port: int, names: list[str], origin: str, **options
) -> Issued:
    leaf, chain = pki.issue(*names)
    cert_path, key_path = node.write_certificate(name, chain, leaf.key_pem)
    node.write_site(Site(name, ip, port, names, cert_path, key_path, origin, options.pop("ttl", 60), **options))
    return leaf


def served_serial(client: ssl.SSLContext, ip: str, port: int, server_name: str) -> int:
    with (
        socket.create_connection((ip, port), timeout=TIMEOUT) as raw,
        client.wrap_socket(raw, server_hostname=server_name) as tls,
    ):
        return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True)).serial_number


def get(client: ssl.SSLContext, ip: str, port: int, server_name: str, path: str) -> tuple[int, str | None, bytes]:
    """GET path over TLS with SNI server_name; return the status, X-Cache-Status and body."""
    with (
        socket.create_connection((ip, port), timeout=TIMEOUT) as raw,
        client.wrap_socket(raw, server_hostname=server_name) as tls,
    ):
        tls.sendall(f"GET {path} HTTP/1.1\r\nHost: {server_name}\r\nConnection: close\r\n\r\n".encode())
        response = http.client.HTTPResponse(tls)
        response.begin()
        return response.status, response.headers["X-Cache-Status"], response.read()


def _all_children(pid: int) -> list[int]:
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def reload_count(node: NginxNode) -> int:
    """Reloads as nginx itself logged them (one SIGHUP line each)."""
    return node.error_log.read_text().count("(SIGHUP) received")


def test_sni_selects_each_sites_certificate_and_requests_reach_the_origin(edge, pki, client, ip, origin):
    port = free_port(ip)
    a = add_site(edge, pki, "ep-a", ip, port, ["a.example.test"], origin.address, origin_scheme="http")
    b = add_site(edge, pki, "ep-b", ip, port, ["b.example.test", "ep-b.cdn.test"], origin.address, origin_scheme="http")
    edge.reload()

    assert a.cert.serial_number != b.cert.serial_number
    assert served_serial(client, ip, port, "a.example.test") == a.cert.serial_number
    assert served_serial(client, ip, port, "b.example.test") == b.cert.serial_number
    assert served_serial(client, ip, port, "ep-b.cdn.test") == b.cert.serial_number

    status, _, body = get(client, ip, port, "a.example.test", "/hello")
    assert (status, body) == (200, b"origin says /hello")
    assert origin.requests == [("/hello", origin.address)]  # Host is the origin's name, not the CDN's

    assert get(client, ip, port, "a.example.test", "/hello") == (200, "HIT", b"origin says /hello")
    assert len(origin.requests) == 1  # answered from the cache within the ttl


def test_https_origin_gets_its_name_and_must_chain_to_a_trusted_root(tmp_path, pki, client, ip):
    # Two trusted roots, so that trusting only the one file nginx is also given would fail a site.
    roots = {"first": make_ca("First Origin Root"), "second": make_ca("Second Origin Root")}
    trusted = tmp_path / "origin-roots"
    trusted.mkdir()
    for label, root in roots.items():
        (trusted / f"{label}.pem").write_text(root.pem)
    subprocess.run(["openssl", "rehash", str(trusted)], check=True, timeout=30)
    roots["unknown"] = make_ca("Unknown Root")

    origins = {}
    for label, root in roots.items():
        leaf = make_leaf(root, ["localhost"])
        (tmp_path / f"{label}.crt").write_text(leaf.pem)
        (tmp_path / f"{label}.key").write_text(leaf.key_pem)
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(tmp_path / f"{label}.crt", tmp_path / f"{label}.key")
        origins[label] = _start_origin(tls)

    try:
        with NginxNode.start(tmp_path / "edge", worker_processes=1, origin_ca_dir=trusted) as node:
            port = free_port(ip)
            for label, origin in origins.items():
                origin_name = f"localhost:{origin.server.server_address[1]}"
                add_site(node, pki, label, ip, port, [f"{label}.example.test"], origin_name, ttl=0)
            node.reload()

            for label in ("first", "second"):
                assert get(client, ip, port, f"{label}.example.test", "/secure") == (200, None, b"origin says /secure")
                assert origins[label].server_names == ["localhost"]
                assert origins[label].requests == [("/secure", f"localhost:{origins[label].server.server_address[1]}")]

            assert get(client, ip, port, "unknown.example.test", "/secure")[0] == 502
            assert origins["unknown"].requests == []
    finally:
        for origin in origins.values():
            origin.server.shutdown()
            origin.server.server_close()


def test_replaced_certificate_is_served_after_reload(edge, pki, client, ip, origin):
    port = free_port(ip)
    old = add_site(edge, pki, "ep-a", ip, port, ["a.example.test"], origin.address, origin_scheme="http")
    edge.reload()
    master = edge.master_pid()
    assert served_serial(client, ip, port, "a.example.test") == old.cert.serial_number

    new, chain = pki.issue("a.example.test")
    edge.write_certificate("ep-a", chain, new.key_pem)
    assert served_serial(client, ip, port, "a.example.test") == old.cert.serial_number  # loaded at reload only

    NginxNode.attach(edge.workdir).reload()  # as a process other than the one that started it would
    assert served_serial(client, ip, port, "a.example.test") == new.cert.serial_number
    assert edge.master_pid() == master
    assert reload_count(edge) == 2


def test_reload_neither_waits_for_nor_cuts_a_request_in_flight(edge, pki, client, ip, origin):
    port = free_port(ip)
    add_site(edge, pki, "ep-a", ip, port, ["a.example.test"], origin.address, origin_scheme="http", ttl=0)
    edge.reload()
    answers = []
    slow = threading.Thread(target=lambda: answers.append(get(client, ip, port, "a.example.test", "/slow")))
    slow.start()
    assert origin.slow_started.wait(timeout=TIMEOUT)

    try:
        edge.reload(timeout=TIMEOUT)  # returns once new workers serve, while an old one still finishes
        assert b"worker process is shutting down" in b"".join(
            Path(f"/proc/{pid}/cmdline").read_bytes() for pid in _all_children(edge.master_pid())
        )
    finally:
        origin.slow_release.set()
        slow.join(timeout=TIMEOUT)
    assert answers == [(200, None, b"origin says /slow")]


def test_two_hundred_sites_take_one_reload(edge, pki, client, ip, origin):
    port = free_port(ip)
    master = edge.master_pid()
    serials = {}
    for i in range(200):
        name = f"site-{i}.example.test"
        leaf = add_site(edge, pki, f"ep-{i}", ip, port, [name], origin.address, origin_scheme="http")
        serials[name] = leaf.cert.serial_number
    assert reload_count(edge) == 0

    edge.reload()

    assert reload_count(edge) == 1
    assert edge.master_pid() == master
    served = {name: served_serial(client, ip, port, name) for name in serials}
    assert served == serials


def test_invalid_site_is_refused_and_the_old_configuration_keeps_serving(edge, pki, client, ip, origin):
    port = free_port(ip)
    good = add_site(edge, pki, "good", ip, port, ["good.example.test"], origin.address, origin_scheme="http")
    edge.reload()

    _, chain = pki.issue("bad.example.test")
    other, _ = pki.issue("bad.example.test")
    cert_path, key_path = edge.write_certificate("bad", chain, other.key_pem)  # a key that is not the cert's
    edge.write_site(Site("bad", ip, port, "bad.example.test", cert_path, key_path, origin.address, 60))

    with pytest.raises(NginxError, match="key values mismatch") as refused:
        edge.reload()
    assert str(key_path) in str(refused.value)
    assert "PRIVATE KEY" not in str(refused.value)
    assert reload_count(edge) == 1  # nginx -t failed, so the master was never signalled
    assert served_serial(client, ip, port, "good.example.test") == good.cert.serial_number

    edge.remove_site("bad")
    edge.remove_site("bad")  # removing what is gone is not an error
    edge.reload()
    assert reload_count(edge) == 2


def test_address_in_use_is_reported_and_the_old_configuration_keeps_serving(edge, pki, client, ip, origin):
    port = free_port(ip)
    good = add_site(edge, pki, "good", ip, port, ["good.example.test"], origin.address, origin_scheme="http")
    edge.reload()

    with socket.create_server((ip, 0)) as squatter:
        taken = squatter.getsockname()[1]
        add_site(edge, pki, "late", ip, taken, ["late.example.test"], origin.address, origin_scheme="http")
        edge.test_config()  # nginx -t does not bind, so only the master finds out
        with pytest.raises(NginxError, match=r"kept its old configuration.*Address already in use"):
            edge.reload()
    assert served_serial(client, ip, port, "good.example.test") == good.cert.serial_number


def test_stop_is_graceful_and_closes_the_listener(tmp_path, pki, ip, origin):
    node = NginxNode.start(tmp_path / "edge", worker_processes=1)
    port = free_port(ip)
    add_site(node, pki, "ep-a", ip, port, ["a.example.test"], origin.address, origin_scheme="http")
    node.reload()
    socket.create_connection((ip, port), timeout=TIMEOUT).close()

    node.stop()

    assert node.process.returncode == 0
    assert "(SIGQUIT) received" in node.error_log.read_text()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((ip, port), timeout=TIMEOUT)
    with pytest.raises(NginxError):
        NginxNode.attach(node.workdir)


def test_site_refuses_values_that_would_rewrite_the_configuration(tmp_path):
    valid = {
        "name": "ep-1", "ip": "127.0.0.1", "port": 443, "server_name": "a.example.test",
        "cert_path": tmp_path / "a.crt", "key_path": tmp_path / "a.key", "origin": "origin.example.test", "ttl": 60,
    }  # fmt: skip
    Site(**valid)
    for field_name, value in [
        ("name", "../escape"),
        ("server_name", "a.example.test; include /etc/passwd"),
        ("origin", "origin.example.test; return 200"),
        ("cert_path", tmp_path / "$ssl_server_name.crt"),
        ("key_path", 'a.key"'),
        ("origin_scheme", "ftp"),
        ("ttl", -1),
    ]:
        with pytest.raises(ValueError):
            Site(**{**valid, field_name: value})

    config = render_main_config(tmp_path, user="nobody")
    assert "/var/" not in config and "daemon" not in config
    assert f'include "{tmp_path}/sites/*.conf";' in config


def test_purge_drops_only_the_matching_cached_copies_of_one_site(edge, pki, client, ip, origin):
    port = free_port(ip)
    add_site(edge, pki, "ep-a", ip, port, ["a.example.test"], origin.address, origin_scheme="http")
    add_site(edge, pki, "ep-b", ip, port, ["b.example.test"], origin.address, origin_scheme="http")
    edge.reload()
    for host, path in (
        ("a.example.test", "/assets/app.css"),
        ("a.example.test", "/index.html"),
        ("b.example.test", "/assets/app.css"),
    ):
        get(client, ip, port, host, path)
        assert get(client, ip, port, host, path)[1] == "HIT"

    assert edge.purge("a.example.test", ["assets/*"]) == 1
    assert get(client, ip, port, "a.example.test", "/assets/app.css")[1] == "MISS"  # fetched again
    assert get(client, ip, port, "a.example.test", "/index.html")[1] == "HIT"  # not matched
    assert get(client, ip, port, "b.example.test", "/assets/app.css")[1] == "HIT"  # another site's copy stays
    assert edge.purge("b.example.test", ["*"]) == 1
    assert get(client, ip, port, "b.example.test", "/assets/app.css")[1] == "MISS"
