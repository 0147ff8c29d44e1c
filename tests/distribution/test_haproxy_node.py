"""A real HAProxy 2.6 load balancer on loopback: certificates swapped at run time, reloads, refused configs."""

import http.client
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509

from certhub.ports import free_port
from distribution.files import write_atomic
from distribution.nodes.haproxy import (
    FALLBACK_NAME,
    Frontend,
    HAProxyError,
    HAProxyNode,
    render_config,
    render_crt_list,
)
from tests.support.pki import Issued, make_ca, make_leaf

HOST = "127.0.0.11"
WWW = "www.example.test"
API = "api.example.test"


def crt_file(issued: Issued) -> str:
    """What a crt file holds: leaf, then key."""
    return issued.pem + issued.key_pem


def unverified_context(alpn: list[str] | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the tests compare serials; the fallback is self-signed
    if alpn:
        context.set_alpn_protocols(alpn)
    return context


def served_certificate(port: int, sni: str) -> x509.Certificate:
    """Handshake as a client sending `sni`; return the leaf the server presented."""
    with socket.create_connection((HOST, port), timeout=5) as raw:
        with unverified_context().wrap_socket(raw, server_hostname=sni) as tls:
            return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))


def served_serial(port: int, sni: str) -> int:
    return served_certificate(port, sni).serial_number


class SNIConnection(http.client.HTTPSConnection):
    """A keep-alive HTTPS connection to HOST that sends `sni` (http.client would send the address)."""

    def __init__(self, port: int, sni: str) -> None:
        super().__init__(HOST, port, timeout=5, context=unverified_context())
        self.sni = sni

    def connect(self) -> None:
        raw = socket.create_connection((self.host, self.port), self.timeout)
        self.sock = self._context.wrap_socket(raw, server_hostname=self.sni)


def get(connection: http.client.HTTPConnection, path: str = "/") -> tuple[int, bytes, http.client.HTTPResponse]:
    connection.request("GET", path, headers={"Host": WWW})
    response = connection.getresponse()
    return response.status, response.read(), response


@pytest.fixture
def node(tmp_path) -> Iterator[HAProxyNode]:
    node = HAProxyNode.start(tmp_path / "lb")
    yield node
    node.stop()


@dataclass
class TLSSite:
    node: HAProxyNode
    port: int
    crt_list: Path
    cert_path: Path
    frontends: list[Frontend]
    a: Issued
    b: Issued

    def render(self) -> str:
        return render_config(
            self.frontends, runtime_socket=self.node.runtime_socket, fallback_certificate=self.node.fallback_certificate
        )


@pytest.fixture
def site(node) -> TLSSite:
    """One https frontend answering "ok" itself, serving cert A for www.example.test from its crt-list."""
    ca = make_ca()
    a, b = make_leaf(ca, [WWW]), make_leaf(ca, [WWW])
    cert_path = node.cert_dir / "www.pem"
    write_atomic(cert_path, crt_file(a))
    crt_list = node.cert_dir / "lb.crtlist"
    write_atomic(crt_list, render_crt_list([(cert_path, [WWW])]))
    port = free_port(HOST)
    frontends = [Frontend("lb", HOST, port, "https", crt_list=crt_list, local_response="ok")]
    site = TLSSite(node, port, crt_list, cert_path, frontends, a, b)
    node.write_config(site.render())
    node.reload()
    return site


def test_serves_the_crt_list_certificate_by_sni_and_the_fallback_otherwise(site):
    assert served_serial(site.port, WWW) == site.a.cert.serial_number
    assert int(site.node.runtime.certificate_serial(str(site.cert_path)), 16) == site.a.cert.serial_number
    fallback = served_certificate(site.port, "unknown.example.test")
    assert fallback.subject.rfc4514_string() == f"CN={FALLBACK_NAME}"

    status, body, _ = get(SNIConnection(site.port, WWW))
    assert (status, body) == (200, b"ok")


def test_set_certificate_swaps_the_served_certificate_without_a_reload(site):
    before = site.node.process_table()

    site.node.runtime.set_certificate(str(site.cert_path), crt_file(site.b))

    assert served_serial(site.port, WWW) == site.b.cert.serial_number
    assert int(site.node.runtime.certificate_serial(str(site.cert_path)), 16) == site.b.cert.serial_number
    after = site.node.process_table()
    assert (after.worker_pid, after.reloads) == (before.worker_pid, before.reloads)


def test_a_certificate_added_at_run_time_is_served_for_its_sni(site):
    api = make_leaf(None, [API])
    api_path = str(site.node.cert_dir / "api.pem")
    runtime = site.node.runtime

    runtime.set_certificate(api_path, crt_file(api))  # unknown to HAProxy: new ssl cert first
    runtime.add_crt_list_entry(str(site.crt_list), api_path, [API])

    assert served_serial(site.port, API) == api.cert.serial_number
    assert served_serial(site.port, WWW) == site.a.cert.serial_number
    assert runtime.show_crt_list(str(site.crt_list)) == [str(site.cert_path), api_path]
    assert api_path in runtime.show_certificates()

    assert runtime.del_crt_list_entry(str(site.crt_list), api_path) is True
    assert served_certificate(site.port, API).subject.rfc4514_string() == f"CN={FALLBACK_NAME}"
    assert runtime.del_crt_list_entry(str(site.crt_list), api_path) is False
    runtime.delete_certificate(api_path)
    assert api_path not in runtime.show_certificates()


def test_a_refused_certificate_is_aborted_without_key_material_in_the_error(site):
    runtime = site.node.runtime
    mismatched = site.b.pem + site.a.key_pem

    with pytest.raises(HAProxyError, match="inconsistencies between private key and certificate") as refused:
        runtime.set_certificate(str(site.cert_path), mismatched)

    assert "PRIVATE KEY" not in str(refused.value)
    assert not any(line in str(refused.value) for line in site.a.key_pem.splitlines()[1:-1])
    assert served_serial(site.port, WWW) == site.a.cert.serial_number
    assert runtime.open_transaction() is None

    new_path = str(site.node.cert_dir / "new.pem")
    with pytest.raises(HAProxyError, match="Can't load the payload"):
        runtime.set_certificate(new_path, "not a certificate\n")
    assert new_path not in runtime.show_certificates()  # the empty store made for it is gone again


def test_set_certificate_leaves_another_files_open_transaction_alone(site):
    runtime = site.node.runtime
    other = str(site.node.cert_dir / "other.pem")
    runtime.command(f"new ssl cert {other}")
    runtime.command(f"set ssl cert {other}", crt_file(make_leaf(None, [API])))  # another writer, mid-update

    # HAProxy 2.6 would put this payload into the open transaction of `other`.
    with pytest.raises(HAProxyError, match=f"transaction is open on {other}"):
        runtime.set_certificate(str(site.cert_path), crt_file(site.b))

    assert runtime.open_transaction() == other
    assert served_serial(site.port, WWW) == site.a.cert.serial_number


def test_keep_alive_clients_see_no_failed_request_during_swaps(site):
    stop = threading.Event()
    failures: list[str] = []
    counts: list[int] = []

    def keep_alive_client() -> None:
        connection = SNIConnection(site.port, WWW)
        requests, first_socket = 0, None
        deadline = time.monotonic() + 30
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                status, body, _ = get(connection)
                first_socket = first_socket or connection.sock
                if (status, body) != (200, b"ok") or connection.sock is not first_socket:
                    failures.append(f"{status} {body!r} reused={connection.sock is first_socket}")
                requests += 1
            except (OSError, http.client.HTTPException) as exc:
                failures.append(repr(exc))
                connection.close()
        counts.append(requests)
        connection.close()

    def new_handshakes() -> None:
        deadline = time.monotonic() + 30
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                status, body, _ = get(SNIConnection(site.port, WWW))
                if (status, body) != (200, b"ok"):
                    failures.append(f"new connection: {status} {body!r}")
            except (OSError, http.client.HTTPException) as exc:
                failures.append(f"new connection: {exc!r}")

    threads = [threading.Thread(target=keep_alive_client) for _ in range(3)]
    threads.append(threading.Thread(target=new_handshakes))
    for thread in threads:
        thread.start()
    try:
        for swap in range(20):
            issued = site.b if swap % 2 == 0 else site.a
            site.node.runtime.set_certificate(str(site.cert_path), crt_file(issued))
            assert served_serial(site.port, WWW) == issued.cert.serial_number
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=10)

    assert failures == []
    assert len(counts) == 3 and min(counts) > 20  # each connection kept sending through the swaps


def test_reload_adds_a_frontend_and_the_open_keep_alive_connection_still_answers(site):
    connection = SNIConnection(site.port, WWW)
    assert get(connection)[:2] == (200, b"ok")
    old_pid = site.node.worker_pid()
    extra_port = free_port(HOST)
    site.frontends.append(Frontend("extra", HOST, extra_port, "http", local_response="extra"))

    site.node.write_config(site.render())
    new_pid = site.node.reload()

    assert new_pid != old_pid and site.node.worker_pid() == new_pid
    assert get(http.client.HTTPConnection(HOST, extra_port, timeout=5))[:2] == (200, b"extra")
    # The old worker answers the idle connection's next request, asking the client to reconnect after it.
    status, body, response = get(connection)
    assert (status, body, response.getheader("Connection")) == (200, b"ok", "close")
    assert get(SNIConnection(site.port, WWW))[:2] == (200, b"ok")


def test_reload_serves_the_certificates_on_disk_not_those_set_at_run_time(site):
    site.node.runtime.set_certificate(str(site.cert_path), crt_file(site.b))  # memory only, file still holds A

    site.node.reload()

    assert served_serial(site.port, WWW) == site.a.cert.serial_number


def test_an_invalid_config_is_refused_and_the_old_one_stays(site):
    old = site.node.config_path.read_text()

    with pytest.raises(HAProxyError, match=r"unknown keyword 'bogus-directive' in 'frontend' section"):
        site.node.write_config(old + "\nfrontend broken\n    bogus-directive on\n")

    assert site.node.config_path.read_text() == old
    assert not (site.node.workdir / "haproxy.cfg.new").exists()
    site.node.reload()
    assert served_serial(site.port, WWW) == site.a.cert.serial_number


def test_a_reload_the_master_cannot_load_fails_and_the_old_worker_serves(site):
    old_pid = site.node.worker_pid()
    # Written behind write_config's back, as a hand edit would be.
    site.node.config_path.write_text(site.node.config_path.read_text() + "\nfrontend broken\n    bogus-directive on\n")

    with pytest.raises(HAProxyError, match="failed to reload"):
        site.node.reload()

    assert site.node.worker_pid() == old_pid
    assert served_serial(site.port, WWW) == site.a.cert.serial_number


def test_an_empty_crt_list_needs_the_fallback_certificate(node):
    crt_list = node.cert_dir / "empty.crtlist"
    write_atomic(crt_list, render_crt_list([]))
    port = free_port(HOST)
    frontends = [Frontend("empty", HOST, port, "https", crt_list=crt_list, local_response="ok")]

    with pytest.raises(HAProxyError, match="no SSL certificate specified for bind"):
        node.write_config(render_config(frontends, runtime_socket=node.runtime_socket))

    node.write_config(
        render_config(frontends, runtime_socket=node.runtime_socket, fallback_certificate=node.fallback_certificate)
    )
    node.reload()
    assert served_certificate(port, WWW).subject.rfc4514_string() == f"CN={FALLBACK_NAME}"
    assert node.runtime.show_crt_list(str(crt_list)) == []


def test_frontends_forward_to_their_targets_in_each_kind(node):
    leaf = make_leaf(None, [WWW])
    cert_path = node.cert_dir / "www.pem"
    write_atomic(cert_path, crt_file(leaf))
    crt_list = node.cert_dir / "origin.crtlist"
    write_atomic(crt_list, render_crt_list([(cert_path, [])]))
    ports = {name: free_port(HOST) for name in ("origin", "edge", "redirect", "empty", "passthrough", "tcp", "h2")}
    frontends = [
        Frontend("origin", HOST, ports["origin"], "https", crt_list=crt_list, local_response="from origin"),
        Frontend("edge", HOST, ports["edge"], "http", targets=[(HOST, ports["origin"])], target_protocol="https"),
        Frontend("redirect", HOST, ports["redirect"], "http", redirect_http_to_https=True),
        Frontend("empty", HOST, ports["empty"], "http"),
        Frontend("passthrough", HOST, ports["passthrough"], "passthrough", targets=[(HOST, ports["origin"])]),
        Frontend("tcp", HOST, ports["tcp"], "tcp", targets=[(HOST, ports["edge"])]),
        Frontend("h2", HOST, ports["h2"], "http2", crt_list=crt_list, local_response="h2"),
    ]
    node.write_config(
        render_config(frontends, runtime_socket=node.runtime_socket, fallback_certificate=node.fallback_certificate)
    )
    node.reload()

    def plain(port: int, path: str = "/") -> tuple[int, bytes, http.client.HTTPResponse]:
        return get(http.client.HTTPConnection(HOST, port, timeout=5), path)

    assert plain(ports["edge"])[:2] == (200, b"from origin")  # re-encrypted to an unverified target
    status, _, response = plain(ports["redirect"], "/a?b=1")
    assert (status, response.getheader("Location")) == (301, f"https://{WWW}/a?b=1")
    assert plain(ports["empty"])[0] == 503
    assert served_serial(ports["passthrough"], WWW) == leaf.cert.serial_number  # TLS from the origin itself
    assert plain(ports["tcp"])[:2] == (200, b"from origin")
    with socket.create_connection((HOST, ports["h2"]), timeout=5) as raw:
        with unverified_context(["h2", "http/1.1"]).wrap_socket(raw, server_hostname=WWW) as tls:
            assert tls.selected_alpn_protocol() == "h2"


def test_attach_reloads_and_stops_a_node_started_elsewhere(node, tmp_path):
    with pytest.raises(HAProxyError):
        HAProxyNode.attach(tmp_path / "nothing-here")
    attached = HAProxyNode.attach(node.workdir)
    old_pid = node.worker_pid()

    new_pid = attached.reload()

    assert attached.process is None
    assert new_pid != old_pid and node.worker_pid() == new_pid
    attached.stop()
    assert node.process.wait(timeout=10) is not None
    with pytest.raises(HAProxyError):
        attached.process_table()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"name": "bad name"}, "unsafe frontend name"),
        ({"kind": "https"}, "needs a crt_list"),
        ({"kind": "passthrough", "target_protocol": "https"}, "passthrough forwards"),
        ({"local_response": "it's"}, "quotes or control characters"),
        ({"kind": "tcp", "local_response": "ok"}, "needs an HTTP kind"),
        ({"kind": "https", "crt_list": Path("/tmp/a list"), "redirect_http_to_https": True}, "unsafe path"),
    ],
)
def test_frontend_refuses_what_haproxy_would_misread(changes, message):
    with pytest.raises(ValueError, match=message):
        Frontend(**{"name": "lb", "ip": HOST, "port": 443, "kind": "http", **changes})


def test_render_crt_list_writes_one_line_per_certificate_with_its_sni_filters():
    text = render_crt_list([(Path("/certs/a.pem"), ["a.example.test", "*.a.example.test"]), (Path("/certs/b.pem"), [])])

    assert text == "/certs/a.pem a.example.test *.a.example.test\n/certs/b.pem\n"
    with pytest.raises(ValueError, match="invalid SNI filter"):
        render_crt_list([(Path("/certs/a.pem"), ["a b"])])


def test_a_swap_left_open_by_a_dead_writer_is_aborted_and_a_listed_swap_needs_no_listing(site):
    runtime = site.node.runtime
    # A writer killed between `set` and `commit` leaves the transaction open.
    runtime.command(f"set ssl cert {site.cert_path}", crt_file(site.b))
    assert runtime.open_transaction() == str(site.cert_path)
    runtime.abort_certificate(str(site.cert_path))
    assert runtime.open_transaction() is None
    assert served_serial(site.port, WWW) == site.a.cert.serial_number  # the aborted swap changed nothing

    loaded = set(runtime.show_certificates())
    runtime.set_certificate(str(site.cert_path), crt_file(site.b), loaded=loaded)
    assert served_serial(site.port, WWW) == site.b.cert.serial_number
