"""CDN endpoints through DigitalOcean's API: a real nginx edge serves the team's Pebble-issued certificate
at the endpoint's name in CertHub's DNS, follows a renewal, and nobody else's certificate or endpoint is reachable."""

import http.client
import http.server
import random
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import pytest
from cryptography import x509

from certhub.ports import free_port
from certificates.models import Certificate
from distribution.models import CdnEndpoint, Deployment, Node
from distribution.nodes.nginx import NginxNode
from dns_zones.models import Record, Zone
from tests.distribution.conftest import make_certificate
from tests.support.acme import DNS_HOST, wait_for_state

CDN_ZONE = "cdn.certhub.test"
CUSTOM_DOMAIN = "static.alpha.test"
TIMEOUT = 5  # seconds, for every client socket
ORIGIN_BODY = b"hello from the origin"


def poll(check, *, timeout: float = 30, interval: float = 0.05, what: str = "condition"):
    """Call check() until it returns something truthy; fail after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout}s (last: {result!r})")
        time.sleep(interval)


@pytest.fixture
def origin() -> Iterator[str]:
    """A plain-http origin on loopback; yields the CDN origin string for it."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(ORIGIN_BODY)))
            self.end_headers()
            self.wfile.write(ORIGIN_BODY)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def edge(tmp_path) -> Iterator[NginxNode]:
    node = NginxNode.start(tmp_path / "edge", worker_processes=1)
    yield node
    node.stop()


def register(edge: NginxNode, name: str = "edge-1") -> Node:
    address = f"127.0.16.{random.randint(2, 254)}"
    return Node.objects.create(
        name=name, kind=Node.Kind.NGINX, address=address, port=free_port(address), config={"workdir": str(edge.workdir)}
    )


@pytest.fixture
def node(db, tmp_path) -> Node:
    """An edge registered without a running nginx: enough for what never reaches a worker."""
    return Node.objects.create(name="edge-idle", kind=Node.Kind.NGINX, address="127.0.16.1", port=8443,
                               config={"workdir": str(tmp_path)})  # fmt: skip


def resolve(name: str, port: int) -> tuple[int, list[str]]:
    """Ask CertHub's DNS server for name's A records: the rcode and the addresses."""
    response = dns.query.udp(dns.message.make_query(name, "A"), DNS_HOST, port=port, timeout=2)
    return response.rcode(), [rr.address for rrset in response.answer for rr in rrset]


def tls_get(context: ssl.SSLContext, address: str, port: int, server_name: str) -> tuple[int, int, bytes]:
    """GET / over TLS with SNI server_name (chain and name verified); return the serial, status and body."""
    with (
        socket.create_connection((address, port), timeout=TIMEOUT) as raw,
        context.wrap_socket(raw, server_hostname=server_name) as tls,
    ):
        serial = x509.load_der_x509_certificate(tls.getpeercert(binary_form=True)).serial_number
        tls.sendall(f"GET /asset.css HTTP/1.1\r\nHost: {server_name}\r\nConnection: close\r\n\r\n".encode())
        response = http.client.HTTPResponse(tls)
        response.begin()
        return serial, response.status, response.read()


def served_serial(address: str, port: int, server_name: str) -> int | None:
    try:
        with (
            socket.create_connection((address, port), timeout=TIMEOUT) as raw,
            ssl._create_unverified_context().wrap_socket(raw, server_hostname=server_name) as tls,
        ):
            return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True)).serial_number
    except OSError:
        return None


def reloads(edge: NginxNode) -> int:
    return edge.error_log.read_text().count("(SIGHUP) received")


def create(api, **body) -> dict:
    r = api.post("/v2/cdn/endpoints", body, format="json")
    assert r.status_code == 201, r.content
    return r.json()["endpoint"]


def errors(response) -> dict[str, list[str]]:
    assert response.status_code == 422, response.content
    body = response.json()
    assert body["id"] == "unprocessable_entity"
    return body["errors"]


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_endpoint_serves_its_certificate_at_its_dns_name_and_a_renewal_within_seconds(
    api, owner, zones, dns_server, dns_port, pebble, use_ca, celery_worker, edge, origin
):
    use_ca(pebble)
    node = register(edge)
    r = api.post("/v2/certificates", {"name": "static", "type": "lets_encrypt", "dns_names": [CUSTOM_DOMAIN]},
                 format="json")  # fmt: skip
    assert r.status_code == 201, r.content
    issued = wait_for_state(api, r.json()["certificate"]["id"])
    assert issued["state"] == "verified", issued["last_error"]
    certificate = Certificate.objects.get(pk=issued["id"])

    created = create(
        api, origin=origin, custom_domain=CUSTOM_DOMAIN, certificate_id=issued["id"], ttl=60, flavour="ignored"
    )
    assert created["endpoint"] == f"{uuid.UUID(created['id']).hex[:12]}.{CDN_ZONE}"
    assert (created["origin"], created["ttl"], created["custom_domain"]) == (origin, 60, CUSTOM_DOMAIN)
    assert created["certificate_id"] == issued["id"] and created["created_at"].endswith("Z")

    def deployment_of(version_id):
        deployment = Deployment.objects.filter(target_id=created["id"], version_id=version_id).first()
        return deployment if deployment and deployment.status != Deployment.Status.PENDING else None

    first = poll(lambda: deployment_of(certificate.current_version_id), what="first deployment")
    assert first.status == Deployment.Status.VERIFIED, first.last_error

    # The endpoint's name resolves through CertHub's DNS to the edge, which serves the certificate
    # (verified against Pebble's root, for the custom domain) and the origin's content.
    addresses = poll(lambda: resolve(created["endpoint"], dns_port)[1], what="A record")
    assert addresses == [node.address]
    client = ssl.create_default_context(cadata=pebble.root_pem())
    serial, status, body = tls_get(client, addresses[0], node.port, CUSTOM_DOMAIN)
    assert serial == int(certificate.current_version.serial, 16)
    assert (status, body) == (200, ORIGIN_BODY)
    # A name no endpoint has is refused, not handed this team's certificate.
    with pytest.raises(ssl.SSLError):
        tls_get(ssl._create_unverified_context(), addresses[0], node.port, "someone-else.example.test")

    before = reloads(edge)
    r = api.post(f"/v2/certificates/{issued['id']}/actions", {"type": "renew"}, format="json")
    assert r.status_code in (200, 201), r.content
    certificate = poll(
        lambda: (c := Certificate.objects.get(pk=issued["id"])).current_version_id != first.version_id and c,
        what="renewed version",
    )
    renewed = poll(lambda: deployment_of(certificate.current_version_id), what="renewal deployment")
    assert renewed.status == Deployment.Status.VERIFIED, renewed.last_error
    new_serial = int(certificate.current_version.serial, 16)
    assert new_serial != serial
    assert tls_get(client, addresses[0], node.port, CUSTOM_DOMAIN)[0] == new_serial
    assert reloads(edge) - before == 1  # a renewal is one batch: one reload, no reconfiguration

    assert api.delete(f"/v2/cdn/endpoints/{created['id']}").status_code == 204
    poll(lambda: resolve(created["endpoint"], dns_port)[0] == dns.rcode.NXDOMAIN, what="name withdrawn")
    poll(lambda: served_serial(node.address, node.port, CUSTOM_DOMAIN) is None, what="site removed")
    assert not list(Path(edge.certs_dir).iterdir())  # no key left behind on the edge
    assert api.get(f"/v2/cdn/endpoints/{created['id']}").status_code == 404


def test_create_validates_as_the_spec_says_and_publishes_the_name(api, team, other_team, node):
    covering = make_certificate(team, "static")  # static.example.test
    theirs = make_certificate(other_team, "static")

    assert "ttl" in errors(api.post("/v2/cdn/endpoints", {"origin": "o.example.test", "ttl": 61}, format="json"))
    assert "ttl" in errors(api.post("/v2/cdn/endpoints", {"origin": "o.example.test", "ttl": "60"}, format="json"))
    assert "origin" in errors(api.post("/v2/cdn/endpoints", {"ttl": 60}, format="json"))
    for bad in ("o.example.test/path", "ftp://o.example.test", "o.example.test:70000", "nodots", "a b.test"):
        assert "origin" in errors(api.post("/v2/cdn/endpoints", {"origin": bad}, format="json")), bad
    base = {"origin": "o.example.test"}
    cases = [
        ({"custom_domain": "static.example.test"}, "certificate_id"),
        ({"certificate_id": str(covering.pk)}, "custom_domain"),
        ({"custom_domain": "other.example.test", "certificate_id": str(covering.pk)}, "certificate_id"),
        ({"custom_domain": "static.example.test", "certificate_id": str(theirs.pk)}, "certificate_id"),
        ({"custom_domain": "static.example.test", "certificate_id": "not-a-uuid"}, "certificate_id"),
        ({"custom_domain": f"x.{CDN_ZONE}", "certificate_id": str(covering.pk)}, "custom_domain"),
    ]
    for extra, field in cases:
        assert field in errors(api.post("/v2/cdn/endpoints", {**base, **extra}, format="json")), extra
    assert not CdnEndpoint.objects.exists()

    created = create(api, origin="Spaces.Example.Test:8443")
    assert (created["origin"], created["ttl"], created["certificate_id"], created["custom_domain"]) == (
        "spaces.example.test:8443",
        3600,
        "",
        "",
    )
    zone = Zone.objects.get(name=CDN_ZONE)
    assert zone.team.name == "platform"
    label = created["endpoint"].removesuffix("." + CDN_ZONE)
    assert list(Record.objects.filter(zone=zone, name=label).values_list("type", "data")) == [("A", node.address)]

    with_domain = create(api, origin="http://127.0.0.1:8080", custom_domain="STATIC.example.test.",
                         certificate_id=str(covering.pk))  # fmt: skip
    assert with_domain["custom_domain"] == "static.example.test" and with_domain["origin"] == "http://127.0.0.1:8080"
    taken = {"custom_domain": "static.example.test", "certificate_id": str(covering.pk)}
    assert "custom_domain" in errors(api.post("/v2/cdn/endpoints", {**base, **taken}, format="json"))


def test_update_changes_only_the_fields_given(api, team, node):
    covering = make_certificate(team, "static")
    created = create(api, origin="o.example.test", ttl=600)
    url = f"/v2/cdn/endpoints/{created['id']}"

    assert "ttl" in errors(api.put(url, {"ttl": 5}, format="json"))
    assert "certificate_id" in errors(api.put(url, {"custom_domain": "static.example.test"}, format="json"))
    r = api.put(url, {"custom_domain": "static.example.test", "certificate_id": str(covering.pk)}, format="json")
    assert r.status_code == 200, r.content
    assert r.json()["endpoint"]["ttl"] == 600 and r.json()["endpoint"]["certificate_id"] == str(covering.pk)
    r = api.put(url, {"ttl": 86400}, format="json")
    assert r.json()["endpoint"] == {**r.json()["endpoint"], "ttl": 86400, "custom_domain": "static.example.test"}
    assert "custom_domain" in errors(api.put(url, {"custom_domain": ""}, format="json"))  # the certificate stays
    r = api.put(url, {"custom_domain": "", "certificate_id": ""}, format="json")
    assert (r.json()["endpoint"]["custom_domain"], r.json()["endpoint"]["certificate_id"]) == ("", "")
    assert api.get(url).json()["endpoint"] == r.json()["endpoint"]


def test_another_teams_endpoint_is_not_found_on_every_route(api, outsider_api, node):
    created = create(api, origin="o.example.test")
    url = f"/v2/cdn/endpoints/{created['id']}"
    for response in (
        outsider_api.get(url),
        outsider_api.put(url, {"ttl": 60}, format="json"),
        outsider_api.delete(url),
        outsider_api.delete(f"{url}/cache", {"files": ["*"]}, format="json"),
    ):
        assert response.status_code == 404 and response.json()["id"] == "not_found"
    assert outsider_api.get("/v2/cdn/endpoints").json() == {"endpoints": [], "links": {}, "meta": {"total": 0}}
    listed = api.get("/v2/cdn/endpoints?per_page=20&page=1").json()
    assert listed == {"endpoints": [created], "links": {}, "meta": {"total": 1}}
    assert CdnEndpoint.objects.get().ttl == 3600


def test_purge_takes_a_list_of_files(api, node):
    url = f"/v2/cdn/endpoints/{create(api, origin='o.example.test')['id']}/cache"
    r = api.delete(url, {"files": ["assets/*", "index.html"]}, format="json")
    assert r.status_code == 204 and r.content == b""
    assert "files" in errors(api.delete(url, {}, format="json"))
    assert "files" in errors(api.delete(url, {"files": "*"}, format="json"))


def test_endpoints_go_to_the_edge_with_fewest_and_none_means_an_operator_must_start_one(api, db, tmp_path):
    assert "operator" in errors(api.post("/v2/cdn/endpoints", {"origin": "o.example.test"}, format="json"))[""][0]
    busy = Node.objects.create(name="edge-a", kind=Node.Kind.NGINX, address="127.0.16.2", port=8443)
    idle = Node.objects.create(name="edge-b", kind=Node.Kind.NGINX, address="127.0.16.3", port=8443)
    Node.objects.create(name="edge-off", kind=Node.Kind.NGINX, address="127.0.16.4", port=8443, active=False)
    placed = [CdnEndpoint.objects.get(pk=create(api, origin="o.example.test")["id"]).node for _ in range(4)]
    assert sorted(n.name for n in placed) == [busy.name, busy.name, idle.name, idle.name]


def test_an_origin_inside_the_platform_is_refused_in_production(api, node, settings):
    settings.CERTHUB_ALLOW_PRIVATE_TARGETS = False
    for origin in ("127.0.0.1", "http://10.0.0.5:3306", "169.254.169.254", "127.0.0.2:8080"):
        r = api.post("/v2/cdn/endpoints", {"origin": origin}, format="json")
        assert r.status_code == 422 and "public address" in r.json()["errors"]["origin"][0], origin
    assert not CdnEndpoint.objects.exists()
