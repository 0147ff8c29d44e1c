"""DigitalOcean's own clients, unchanged, against CertHub's live server: pydo and python-digitalocean drive
load balancers on a real HAProxy, CDN endpoints on a real nginx and database clusters on a real MariaDB,
with certificates issued by Pebble through CertHub's DNS and deployed by a real Celery worker."""

import http.client
import socket
import ssl
import uuid
from collections.abc import Iterator

import digitalocean
import MySQLdb
import pydo
import pytest
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError
from digitalocean.LoadBalancer import ForwardingRule, HealthCheck, StickySessions

from certhub.models import ApiToken, Team
from certhub.ports import free_port
from certificates.models import Certificate
from distribution import databases
from distribution.models import Deployment, Node
from distribution.nodes.mariadb import MariaDBNode
from distribution.nodes.nginx import NginxNode
from tests.distribution.test_cdn_endpoints import tls_get
from tests.distribution.test_databases import verified_deployment
from tests.distribution.test_load_balancers import PORT, issue, lb_body, served, verified, wait_for
from tests.support.nodes import Backend, haproxy_node

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]
POOL = "127.0.112.0/24"  # load balancer addresses of this module's own
EDGE_HOST = "127.0.113.2"
DB_HOST = "127.0.113.1"
DB_BODY = {"name": "backend", "engine": "mysql", "num_nodes": 1, "size": "db-s-1vcpu-1gb", "region": "nyc3"}
NOT_FOUND = {"id": "not_found", "message": "The resource you were accessing could not be found."}
HTTP = {"enforce_https": False}  # pydo refuses a Bearer token over plain http without it, call by call


def token(team: Team) -> str:
    return ApiToken.issue(team=team, scopes=["read", "write"])[1]


def pydo_client(live_server, team: Team) -> pydo.Client:
    # No retries and short timeouts: a failure shows at once instead of after pydo's backoff.
    return pydo.Client(token=token(team), endpoint=live_server.url, retry_total=0, connection_timeout=5,
                       read_timeout=15)  # fmt: skip


def http_get(ip: str, port: int) -> bytes | None:
    """GET / over plain HTTP; None while nothing listens there."""
    try:
        connection = http.client.HTTPConnection(ip, port, timeout=3)
        connection.request("GET", "/")
        return connection.getresponse().read()
    except OSError:
        return None


def settle(node: Node) -> None:
    """Wait until no delivery holds the node and its configuration is applied, so stopping it strands no task."""

    def idle() -> bool:
        node.refresh_from_db()
        return node.busy_until is None and node.applied_generation == node.config_generation

    wait_for(idle, what=f"node {node.name} idle")


def handshake_refused(ip: str, port: int, server_name: str) -> bool:
    """True once the edge refuses a TLS handshake for server_name (no site serves it any more)."""
    try:
        with socket.create_connection((ip, port), timeout=1) as raw:
            ssl._create_unverified_context().wrap_socket(raw, server_hostname=server_name).close()
        return False
    except ssl.SSLError:
        return True


def closed(ip: str, port: int) -> bool:
    try:
        socket.create_connection((ip, port), timeout=1).close()
        return False
    except OSError:
        return True


@pytest.fixture
def lb_node(settings, team, owner, zones, dns_server, pebble, use_ca, celery_worker) -> Iterator[Backend]:
    settings.CERTHUB_LB_ADDRESS_POOL = POOL
    settings.CERTHUB_DELIVERY_RETRY_BASE_DELAY = 0.2
    settings.CERTHUB_DELIVERY_RETRY_MAX_DELAY = 1.0
    use_ca(pebble)
    backend = Backend()
    with haproxy_node("lb-do-clients") as (_, node):
        yield backend
        settle(node)
    backend.stop()


def test_pydo_drives_a_load_balancer_that_serves_its_pebble_certificate(
    live_server, api, team, other_team, lb_node, pebble
):
    backend = lb_node
    client = pydo_client(live_server, team)
    certificate = issue(api, "www", ["www.alpha.test"])
    body = lb_body(certificate["id"], backend)
    del body["size"], body["vpc_uuid"]  # pydo sends only what it is given

    created = client.load_balancers.create(body=body, **HTTP)["load_balancer"]
    assert created["name"] == "web-lb" and created["status"] == "new" and created["ip"].startswith("127.0.112.")
    assert created["region"]["slug"] == "nyc3" and created["size"] == "lb-small"
    assert created["sticky_sessions"] == {"type": "none"} and created["health_check"]["port"] == 80
    https_rule = {
        "entry_protocol": "https", "entry_port": PORT, "target_protocol": "http", "target_port": backend.port,
        "certificate_id": certificate["id"], "tls_passthrough": False,
    }  # fmt: skip
    assert https_rule in created["forwarding_rules"] and len(created["forwarding_rules"]) == 2
    lb_id, ip = created["id"], created["ip"]

    deployed = wait_for(lambda: verified(certificate["id"], lb_id), what="the certificate deployed and verified")
    leaf = served(ip, PORT, "www.alpha.test", pebble.root_pem())  # verified against Pebble's root only
    assert format(leaf.serial_number, "x") == deployed.served_serial
    assert client.load_balancers.get(lb_id, **HTTP)["load_balancer"]["status"] == "active"
    listed = client.load_balancers.list(**HTTP)
    assert [lb["id"] for lb in listed["load_balancers"]] == [lb_id] and listed["meta"] == {"total": 1}

    # A full replacement in DigitalOcean's keys only: the targets (CertHub's addition) stay.
    update = {key: value for key, value in body.items() if key != "target_addresses"}
    update.update(name="web-lb-2", forwarding_rules=[https_rule], algorithm="least_connections")
    updated = client.load_balancers.update(lb_id, body=update, **HTTP)["load_balancer"]
    assert (updated["name"], updated["algorithm"], updated["forwarding_rules"]) == (
        "web-lb-2", "least_connections", [https_rule]
    )  # fmt: skip
    assert updated["target_addresses"] == [backend.host] and updated["ip"] == ip
    wait_for(lambda: closed(ip, 8080), what="the dropped http listener closed")

    tcp_rule = {"entry_protocol": "tcp", "entry_port": 9012, "target_protocol": "tcp", "target_port": backend.port,
                "certificate_id": "", "tls_passthrough": False}  # fmt: skip
    assert client.load_balancers.add_forwarding_rules(lb_id, body={"forwarding_rules": [tcp_rule]}, **HTTP) is None
    wait_for(lambda: http_get(ip, 9012) == b"backend ok", what="the tcp listener")
    assert tcp_rule in client.load_balancers.get(lb_id, **HTTP)["load_balancer"]["forwarding_rules"]
    assert client.load_balancers.remove_forwarding_rules(lb_id, body={"forwarding_rules": [tcp_rule]}, **HTTP) is None
    assert client.load_balancers.get(lb_id, **HTTP)["load_balancer"]["forwarding_rules"] == [https_rule]
    wait_for(lambda: closed(ip, 9012), what="the tcp listener closed")

    # A 422 raises HttpResponseError carrying DigitalOcean's error body and our message.
    with pytest.raises(HttpResponseError) as refused:
        client.load_balancers.create(body={**body, "name": "bad", "forwarding_rules": []}, **HTTP)
    assert refused.value.status_code == 422 and "forwarding_rules: must be a list" in refused.value.message
    assert refused.value.response.json()["id"] == "unprocessable_entity"
    # Another team's id: pydo accepts the 404 and returns the error body.
    outsider = pydo_client(live_server, other_team)
    assert outsider.load_balancers.get(lb_id, **HTTP) == NOT_FOUND
    assert outsider.load_balancers.delete(lb_id, **HTTP) == NOT_FOUND
    assert outsider.load_balancers.list(**HTTP)["load_balancers"] == []
    with pytest.raises(ClientAuthenticationError):
        pydo.Client(token="not-a-token", endpoint=live_server.url, retry_total=0).load_balancers.list(**HTTP)

    assert client.load_balancers.delete(lb_id, **HTTP) is None
    assert client.load_balancers.get(lb_id, **HTTP) == NOT_FOUND
    wait_for(lambda: closed(ip, PORT), what="the https listener closed")


def test_python_digitalocean_drives_a_load_balancer(live_server, api, team, lb_node, monkeypatch):
    backend = lb_node
    end_point = live_server.url + "/v2/"
    # Manager.get_all_load_balancers() builds its objects without end_point: they read it from here.
    monkeypatch.setenv("DIGITALOCEAN_END_POINT", end_point)
    monkeypatch.setenv("PYTHON_DIGITALOCEAN_REQUEST_TIMEOUT_SEC", "15")
    secret = token(team)
    rule = ForwardingRule("http", 8012, "http", backend.port)
    lb = digitalocean.LoadBalancer(
        token=secret, end_point=end_point, name="py-lb", region="nyc3", algorithm="round_robin",
        forwarding_rules=[rule], health_check=HealthCheck(), sticky_sessions=StickySessions(),
    )  # fmt: skip
    lb.create()
    assert uuid.UUID(lb.id) and lb.ip.startswith("127.0.112.") and lb.status == "new" and lb.droplet_ids == []
    assert lb.health_check.__dict__ == HealthCheck().__dict__ and lb.sticky_sessions.type == "none"

    # The client cannot send targets: give them with CertHub's addition, then let the client read and save.
    body = {"name": "py-lb", "region": "nyc3", "target_addresses": [backend.host], "forwarding_rules": [rule.__dict__]}
    r = api.put(f"/v2/load_balancers/{lb.id}", body, format="json")
    assert r.status_code == 200, r.content
    wait_for(lambda: http_get(lb.ip, 8012) == b"backend ok", what="the http listener")

    (listed,) = digitalocean.Manager(token=secret, end_point=end_point).get_all_load_balancers()
    assert (
        listed.id == lb.id and listed.region["slug"] == "nyc3" and listed.health_check.healthy_threshold == 3
    )  # the spec's default
    assert [listed_rule.__dict__ for listed_rule in listed.forwarding_rules] == [rule.__dict__]

    loaded = digitalocean.LoadBalancer(token=secret, end_point=end_point, id=lb.id).load()
    assert loaded.name == "py-lb" and loaded.status == "active" and loaded.region["slug"] == "nyc3"
    loaded.name = "py-lb-renamed"
    loaded.health_check.path = "/healthz"
    saved = loaded.save()["load_balancer"]
    assert saved["name"] == "py-lb-renamed" and saved["health_check"]["path"] == "/healthz"
    assert saved["target_addresses"] == [backend.host]  # save() sent only DigitalOcean's keys
    wait_for(lambda: http_get(lb.ip, 8012) == b"backend ok", what="the saved load balancer still forwarding")

    tcp = ForwardingRule("tcp", 9013, "tcp", backend.port)
    assert loaded.add_forwarding_rules([tcp]) is True
    wait_for(lambda: http_get(lb.ip, 9013) == b"backend ok", what="the tcp listener")
    assert len(loaded.load().forwarding_rules) == 2
    assert loaded.remove_forwarding_rules([tcp]) is True
    assert [kept.entry_port for kept in loaded.load().forwarding_rules] == [8012]

    # Errors: the client reads `message` out of DigitalOcean's {id, message} body, or raises on a 404.
    with pytest.raises(digitalocean.DataReadError, match="forwarding_rules"):
        digitalocean.LoadBalancer(token=secret, end_point=end_point, name="bad", region="nyc3").create()
    with pytest.raises(digitalocean.NotFoundError):
        digitalocean.LoadBalancer(token=secret, end_point=end_point, id=str(uuid.uuid4())).load()
    with pytest.raises(digitalocean.DataReadError, match="Unable to authenticate you"):
        digitalocean.Manager(token="not-a-token", end_point=end_point).get_all_load_balancers()

    assert loaded.destroy() is True
    assert digitalocean.Manager(token=secret, end_point=end_point).get_all_load_balancers() == []
    wait_for(lambda: closed(lb.ip, 8012), what="the listener closed")


@pytest.fixture
def edge(tmp_path) -> Iterator[Node]:
    process = NginxNode.start(tmp_path / "edge", worker_processes=1)
    node = Node.objects.create(name="edge-do-clients", kind=Node.Kind.NGINX, address=EDGE_HOST,
                               port=free_port(EDGE_HOST), config={"workdir": str(process.workdir)})  # fmt: skip
    yield node
    settle(node)
    process.stop()


@pytest.fixture
def origin() -> Iterator[Backend]:
    server = Backend(body=b"from the origin")
    yield server
    server.stop()


def test_pydo_drives_a_cdn_endpoint_on_an_nginx_edge(
    live_server, api, team, other_team, owner, zones, dns_server, pebble, use_ca, celery_worker, edge, origin
):
    use_ca(pebble)
    client = pydo_client(live_server, team)
    certificate = issue(api, "static", ["static.alpha.test"])

    created = client.cdn.create_endpoint(body={"origin": f"http://{origin.host}:{origin.port}", "ttl": 600}, **HTTP)
    endpoint = created["endpoint"]
    assert endpoint["origin"] == f"http://{origin.host}:{origin.port}" and endpoint["ttl"] == 600
    assert endpoint["endpoint"].endswith(".cdn.certhub.test") and endpoint["created_at"].endswith("Z")
    assert (endpoint["certificate_id"], endpoint["custom_domain"]) == ("", "")
    cdn_id = endpoint["id"]

    change = {"custom_domain": "static.alpha.test", "certificate_id": certificate["id"], "ttl": 60}
    updated = client.cdn.update_endpoints(cdn_id, body=change, **HTTP)["endpoint"]
    assert {key: updated[key] for key in change} == change and updated["origin"] == endpoint["origin"]
    deployed = wait_for(lambda: verified(certificate["id"], cdn_id), what="the certificate on the edge")
    serial, status, body = tls_get(
        ssl.create_default_context(cadata=pebble.root_pem()), EDGE_HOST, edge.port, "static.alpha.test"
    )
    assert format(serial, "x") == deployed.served_serial and (status, body) == (200, b"from the origin")

    assert client.cdn.get_endpoint(cdn_id, **HTTP) == {"endpoint": updated}
    assert client.cdn.list_endpoints(**HTTP) == {"endpoints": [updated], "links": {}, "meta": {"total": 1}}
    assert client.cdn.purge_cache(cdn_id, body={"files": ["*"]}, **HTTP) is None

    with pytest.raises(HttpResponseError) as refused:
        client.cdn.create_endpoint(body={"origin": "o.example.test", "ttl": 61}, **HTTP)
    assert refused.value.status_code == 422 and "ttl: must be one of 60, 600" in refused.value.message
    outsider = pydo_client(live_server, other_team)
    assert outsider.cdn.get_endpoint(cdn_id, **HTTP) == NOT_FOUND
    assert outsider.cdn.purge_cache(cdn_id, body={"files": ["*"]}, **HTTP) == NOT_FOUND

    assert client.cdn.delete_endpoint(cdn_id, **HTTP) is None
    assert client.cdn.get_endpoint(cdn_id, **HTTP) == NOT_FOUND
    wait_for(
        lambda: handshake_refused(EDGE_HOST, edge.port, "static.alpha.test"), what="the site removed from the edge"
    )


@pytest.fixture
def mariadb(tmp_path) -> Iterator[MariaDBNode]:
    node = MariaDBNode.start(tmp_path / "db", host=DB_HOST, port=free_port(DB_HOST))
    yield node
    node.stop()


def test_pydo_drives_a_database_cluster_on_mariadb(
    live_server, team, other_team, dns_server, pebble, use_ca, celery_worker, mariadb, tmp_path
):
    use_ca(pebble)
    node = databases.register_database_node(name="db12", process=mariadb)
    wait_for(lambda: verified_deployment(node), timeout=60, what="the platform certificate deployed and verified")
    client = pydo_client(live_server, team)

    database = client.databases.create_cluster(body={**DB_BODY, "tags": ["production"]}, **HTTP)["database"]
    assert (database["name"], database["engine"], database["num_nodes"], database["region"]) == (
        "backend", "mysql", 1, "nyc3"
    )  # fmt: skip
    assert database["status"] == "online" and database["tags"] == ["production"]
    connection = database["connection"]
    assert connection["host"].endswith(".db12.db.certhub.test") and connection["port"] == mariadb.port
    assert connection["ssl"] is True and database["db_names"] == [connection["database"]]
    cluster_id = database["id"]

    assert client.databases.get_cluster(cluster_id, **HTTP) == {"database": database}
    assert client.databases.list_clusters(**HTTP) == {"databases": [database]}
    assert client.databases.list_clusters(tag_name="staging", **HTTP) == {"databases": []}
    # The connection details log in, over TLS checked against Pebble's root only.
    root = tmp_path / "pebble-root.pem"
    root.write_text(pebble.root_pem())
    login = {
        "host": DB_HOST, "port": connection["port"], "user": connection["user"], "password": connection["password"],
        "database": connection["database"], "ssl": {"ca": str(root)}, "connect_timeout": 5,
    }  # fmt: skip
    session = MySQLdb.connect(**login)
    with session.cursor() as cursor:
        cursor.execute("SELECT DATABASE()")
        assert cursor.fetchone() == (connection["database"],)
    session.close()

    with pytest.raises(HttpResponseError) as refused:
        client.databases.create_cluster(body={**DB_BODY, "name": "other", "engine": "oracle"}, **HTTP)
    assert refused.value.status_code == 422 and "engine: must be mysql" in refused.value.message
    outsider = pydo_client(live_server, other_team)
    assert outsider.databases.get_cluster(cluster_id, **HTTP) == NOT_FOUND
    assert outsider.databases.destroy_cluster(cluster_id, **HTTP) == NOT_FOUND

    assert client.databases.destroy_cluster(cluster_id, **HTTP) is None
    assert client.databases.get_cluster(cluster_id, **HTTP) == NOT_FOUND
    assert client.databases.list_clusters(**HTTP) == {"databases": []}
    with pytest.raises(MySQLdb.OperationalError):
        MySQLdb.connect(**login)
    assert Certificate.objects.filter(pk=node.certificate_id).exists()  # the node keeps its platform certificate
    assert not Deployment.objects.filter(status=Deployment.Status.FAILED).exists()
