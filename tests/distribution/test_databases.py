"""Managed MySQL databases end to end: a real mariadbd registered as a database node, its platform wildcard
issued by Pebble through CertHub's DNS and deployed by a real Celery worker, `/v2/databases` as DigitalOcean
answers it, and clients that trust only Pebble's root.

The node runs on 127.0.17.1 and a free port for the whole module (installing a data directory takes
seconds); every test registers it afresh in its own database.
"""

import hashlib
import socket
import ssl
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.query
import MySQLdb
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from django.utils import timezone

from certhub.ports import free_port
from certificates.models import Certificate, CertificateVersion
from distribution import databases, delivery
from distribution.adapters import AdapterError, adapter_for
from distribution.delivery import TargetRef
from distribution.models import DatabaseCluster, Deployment, Node
from distribution.nodes import mariadb as protocol
from distribution.nodes.mariadb import MariaDBNode, served_certificate
from distribution.platform import platform_team
from distribution.probe import der_serial
from dns_zones.models import Record
from tests.conftest import token_client
from tests.support.acme import DNS_HOST
from tests.support.pki import make_ca, make_leaf

HOST = "127.0.17.1"
NODE = "db1"
DOMAIN = "db1.db.certhub.test"
BODY = {"name": "backend", "engine": "mysql", "num_nodes": 1, "size": "db-s-1vcpu-1gb", "region": "nyc3"}
ACCESS_DENIED = 1045
ACCESS_DENIED_NO_PASSWORD = 1698
TLS_REFUSED = 2026  # CR_SSL_CONNECTION_ERROR


@pytest.fixture(scope="module")
def mariadb(tmp_path_factory) -> Iterator[MariaDBNode]:
    node = MariaDBNode.start(tmp_path_factory.mktemp("db1"), host=HOST, port=free_port(HOST))
    yield node
    node.stop()


@pytest.fixture
def node(db, mariadb) -> Node:
    """Registered without a worker: the certificate is requested, nothing is issued or deployed."""
    return databases.register_database_node(name=NODE, process=mariadb)


@pytest.fixture
def pebble_root(pebble, tmp_path) -> Path:
    path = tmp_path / "pebble-root.pem"
    path.write_text(pebble.root_pem())
    return path


def wait_for(predicate, what: str, timeout: float = 30):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not within {timeout} s")
        time.sleep(0.05)


def verified_deployment(node: Node) -> Deployment | None:
    certificate = Certificate.objects.get(pk=node.certificate_id)
    failed = Deployment.objects.filter(node=node, status=Deployment.Status.FAILED).first()
    assert failed is None, failed.last_error
    return (
        Deployment.objects.filter(
            node=node, version_id=certificate.current_version_id, status=Deployment.Status.VERIFIED
        )
        .select_related("version")
        .first()
    )


@pytest.fixture
def issued_node(dns_server, pebble, use_ca, celery_worker, mariadb) -> Node:
    """Registered with a worker running: the platform wildcard is issued and deployed to the node."""
    use_ca(pebble)
    node = databases.register_database_node(name=NODE, process=mariadb)
    wait_for(lambda: verified_deployment(node), "the platform certificate deployed and verified", timeout=60)
    return node


def create(api, **changes) -> dict:
    response = api.post("/v2/databases", {**BODY, **changes}, format="json")
    assert response.status_code == 201, response.content
    return response.json()["database"]


def login(connection: dict, *, password: str | None = None, **options) -> MySQLdb.Connection:
    """Log in as the cluster's user at the node's address (TLS required, the chain not checked unless asked)."""
    options.setdefault("ssl_mode", "REQUIRED")
    return MySQLdb.connect(
        host=HOST, port=connection["port"], user=connection["user"], database=connection["database"],
        password=connection["password"] if password is None else password, connect_timeout=5, **options,
    )  # fmt: skip


def resolve(dns_port: int, name: str) -> list[str]:
    response = dns.query.udp(dns.message.make_query(name, "A"), DNS_HOST, port=dns_port, timeout=2)
    return sorted(rdata.address for rrset in response.answer for rdata in rrset)


def mysql_tls(host: str, port: int, *, server_hostname: str, cafile: Path) -> tuple[ssl.SSLSocket, bytes]:
    """Upgrade a MySQL connection to TLS as a verifying client does (chain to cafile, name checked).

    Returns the TLS socket and the server's 20-byte scramble, for a login on the same connection.
    """
    context = ssl.create_default_context(cafile=str(cafile))  # trusts only cafile; check_hostname is on
    sock = socket.create_connection((host, port), timeout=5)
    try:
        handshake = protocol._read_packet(sock)
        assert protocol._server_capabilities(handshake) & protocol.CLIENT_SSL
        # HandshakeV10: version NUL, connection id, scramble part 1 (8), filler, capabilities, charset,
        # status, capabilities, scramble length, 10 reserved; then part 2 (12 and a NUL).
        start = handshake.index(b"\0", 1) + 1 + 4
        scramble = handshake[start : start + 8] + handshake[start + 8 + 1 + 2 + 1 + 2 + 2 + 1 + 10 :][:12]
        payload = struct.pack("<IIB23x", _flags(), protocol.MAX_PACKET, protocol.CHARSET_UTF8MB4_GENERAL_CI)
        sock.sendall(len(payload).to_bytes(3, "little") + b"\x01" + payload)
        return context.wrap_socket(sock, server_hostname=server_hostname), scramble
    except BaseException:
        sock.close()
        raise


def _flags() -> int:
    return (
        protocol.CLIENT_LONG_PASSWORD | protocol.CLIENT_PROTOCOL_41 | protocol.CLIENT_SSL
        | protocol.CLIENT_SECURE_CONNECTION | protocol.CLIENT_PLUGIN_AUTH | 0x8  # CLIENT_CONNECT_WITH_DB
    )  # fmt: skip


def native_login(tls: ssl.SSLSocket, scramble: bytes, user: str, password: str, database: str) -> bytes:
    """Send HandshakeResponse41 with mysql_native_password over the TLS socket; return the server's reply."""
    stage1 = hashlib.sha1(password.encode()).digest()
    mask = hashlib.sha1(scramble + hashlib.sha1(stage1).digest()).digest()
    token = bytes(a ^ b for a, b in zip(stage1, mask, strict=True))
    payload = (
        struct.pack("<IIB23x", _flags(), protocol.MAX_PACKET, protocol.CHARSET_UTF8MB4_GENERAL_CI)
        + user.encode() + b"\0" + bytes([len(token)]) + token + database.encode() + b"\0"
        + b"mysql_native_password\0"
    )  # fmt: skip
    tls.sendall(len(payload).to_bytes(3, "little") + b"\x02" + payload)
    return protocol._read_packet(tls)


def test_platform_wildcard_is_issued_deployed_and_a_new_database_is_reached_by_name_fully_verified(
    issued_node, api, pebble_root, dns_port
):
    deployment = verified_deployment(issued_node)
    served_der = served_certificate(HOST, issued_node.port)
    assert deployment.served_serial == deployment.version.serial == der_serial(served_der)
    served = x509.load_der_x509_certificate(served_der)
    san = served.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["*." + DOMAIN]
    certificate = Certificate.objects.get(pk=issued_node.certificate_id)
    assert certificate.team == platform_team() and certificate.name == "node-db1"

    database = create(api, tags=["production"], storage_size_mib=61440, rules=[{"type": "ip_addr", "value": "1"}])
    connection = database["connection"]
    host = connection["host"]
    label, _, domain = host.partition(".")
    assert label.startswith("backend-") and len(label) == len("backend-") + 6 and domain == DOMAIN
    assert database["status"] == "online"  # the node already serves its current certificate
    assert [database[key] for key in ("engine", "version", "num_nodes", "region")] == ["mysql", "8", 1, "nyc3"]
    assert database["db_names"] == [connection["database"]] and database["tags"] == ["production"]
    assert database["users"] == [{"name": connection["user"], "role": "primary", "password": connection["password"]}]
    assert database["private_connection"] == connection and database["maintenance_window"] is None
    assert connection["port"] == issued_node.port and connection["ssl"] is True and len(connection["password"]) >= 24
    assert connection["uri"] == (
        f"mysql://{connection['user']}:{connection['password']}@{host}:{issued_node.port}/{connection['database']}"
        "?ssl-mode=REQUIRED"
    )
    fetched = api.get(f"/v2/databases/{database['id']}").json()["database"]
    assert fetched == database
    assert api.get("/v2/databases").json() == {"databases": [database]}
    assert api.get("/v2/databases?tag_name=production").json()["databases"] == [database]
    assert api.get("/v2/databases?tag_name=staging").json()["databases"] == []

    # The name is published in CertHub's DNS, at the node's address.
    assert wait_for(lambda: resolve(dns_port, host) == [HOST], f"{host} in DNS", timeout=5)

    # Identity: over the MySQL TLS upgrade, a client trusting only Pebble's root accepts the name it
    # resolved, then logs in as the cluster's user on that verified connection.
    tls, scramble = mysql_tls(HOST, connection["port"], server_hostname=host, cafile=pebble_root)
    with tls:
        assert ("DNS", "*." + DOMAIN) in tls.getpeercert()["subjectAltName"]
        reply = native_login(tls, scramble, connection["user"], connection["password"], connection["database"])
    assert reply[:1] == b"\x00", reply  # OK packet
    tls, scramble = mysql_tls(HOST, connection["port"], server_hostname=host, cafile=pebble_root)
    with tls:
        reply = native_login(tls, scramble, connection["user"], "not the password", connection["database"])
    assert reply[:1] == b"\xff" and int.from_bytes(reply[1:3], "little") == ACCESS_DENIED
    # The checks can fail: another node's name, another root.
    with pytest.raises(ssl.SSLCertVerificationError, match="match"):
        mysql_tls(HOST, connection["port"], server_hostname="backend.db2.db.certhub.test", cafile=pebble_root)
    other_root = pebble_root.with_name("other-root.pem")
    other_root.write_text(make_ca("Not Pebble").pem)
    with pytest.raises(ssl.SSLCertVerificationError, match="issuer"):
        mysql_tls(HOST, connection["port"], server_hostname=host, cafile=other_root)

    # MySQLdb (Connector/C) to the address, the chain checked against Pebble's root only.
    client = login(connection, ssl={"ca": str(pebble_root)})
    with client.cursor() as cursor:
        cursor.execute("SELECT DATABASE(), CURRENT_USER()")
        assert cursor.fetchone() == (connection["database"], connection["user"] + "@%")
        cursor.execute("SHOW SESSION STATUS LIKE 'Ssl_version'")
        assert cursor.fetchone()[1].startswith("TLSv1.")
        cursor.execute("CREATE TABLE t (id INT PRIMARY KEY)")
    client.close()
    with pytest.raises(MySQLdb.OperationalError) as refused:
        login(connection, ssl={"ca": str(other_root)})
    assert refused.value.args[0] == TLS_REFUSED


def test_renewed_platform_certificate_is_served_within_seconds_without_a_restart(issued_node, mariadb, api):
    first = verified_deployment(issued_node).version
    pid = int((Path(issued_node.config["workdir"]) / "mariadbd.pid").read_text())
    assert pid == mariadb.process.pid
    connection = create(api)["connection"]
    session = login(connection)
    with session.cursor() as cursor:
        cursor.execute("SELECT CONNECTION_ID()")
        (session_id,) = cursor.fetchone()

    platform_api = token_client(platform_team(), ["read", "write"])
    response = platform_api.post(
        f"/v2/certificates/{issued_node.certificate_id}/actions", {"type": "renew"}, format="json"
    )
    assert response.status_code == 201, response.content
    renewed = wait_for(
        lambda: (d := verified_deployment(issued_node)) and d.version_id != first.pk and d, "the renewal deployed"
    )

    assert renewed.version.serial != first.serial
    assert der_serial(served_certificate(HOST, issued_node.port)) == renewed.version.serial == renewed.served_serial
    assert mariadb.process.poll() is None
    assert int((Path(issued_node.config["workdir"]) / "mariadbd.pid").read_text()) == pid
    with session.cursor() as cursor:  # the session from before the reload is still the same one
        cursor.execute("SELECT CONNECTION_ID()")
        assert cursor.fetchone() == (session_id,)
    session.close()
    # A customer's team cannot renew the platform's certificate.
    theirs = api.post(f"/v2/certificates/{issued_node.certificate_id}/actions", {"type": "renew"}, format="json")
    assert theirs.status_code == 404


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"name": None}, "name: is required"),
        ({"name": "Back_End"}, "name: must be 3 to 63 lowercase letters"),
        ({"name": "ab"}, "name: must be 3 to 63"),
        ({"name": "backend-"}, "name: must be 3 to 63"),
        ({"name": "b" * 64}, "name: must be 3 to 63"),
        ({"engine": None}, "engine: is required"),
        ({"engine": "pg"}, "engine: only mysql is offered"),
        ({"engine": "advanced_mysql"}, "engine: only mysql is offered"),
        ({"engine": "oracle"}, "engine: must be mysql"),
        ({"num_nodes": None}, "num_nodes: is required"),
        ({"num_nodes": 4}, "num_nodes: must be an integer from 1 to 3"),
        ({"num_nodes": "2"}, "num_nodes: must be an integer"),
        ({"num_nodes": True}, "num_nodes: must be an integer"),
        ({"size": None}, "size: is required"),
        ({"size": "DB S"}, "size: must be a size slug"),
        ({"region": None}, "region: is required"),
        ({"region": {"slug": "nyc3"}}, "region: must be a region slug"),
        ({"version": "5.7"}, "version: must be one of 8"),
        ({"tags": "production"}, "tags: must be a list"),
        ({"tags": [1]}, "tags: must be a list"),
    ],
)
def test_invalid_requests_are_422_and_create_nothing(api, node, mariadb, changes, message):
    body = {key: value for key, value in {**BODY, **changes}.items() if value is not None}
    response = api.post("/v2/databases", body, format="json")
    assert response.status_code == 422, response.content
    assert response.json()["id"] == "unprocessable_entity"
    assert response.json()["message"].startswith(message)
    assert not DatabaseCluster.objects.exists()


def test_without_a_database_node_create_is_422_asking_for_an_operator(api, db):
    response = api.post("/v2/databases", BODY, format="json")
    assert response.status_code == 422
    assert "an operator must start one" in response.json()["message"]


def test_another_teams_database_is_not_found_on_every_route(api, outsider_api, node):
    database = create(api)
    url = f"/v2/databases/{database['id']}"

    assert outsider_api.get(url).status_code == 404
    assert outsider_api.delete(url).status_code == 404
    assert outsider_api.get("/v2/databases").json() == {"databases": []}
    assert api.get(url).status_code == 200
    login(database["connection"]).close()  # the outsider's delete dropped nothing
    # The same name in another team is another cluster; twice in one team is refused.
    assert create(outsider_api)["connection"]["host"] != database["connection"]["host"]
    taken = api.post("/v2/databases", BODY, format="json")
    assert taken.status_code == 422 and "already has a database cluster" in taken.json()["message"]


def test_delete_drops_the_database_and_its_user_and_withdraws_the_name(api, node, mariadb):
    database = create(api)
    connection = database["connection"]
    client = login(connection)
    client.close()
    relative = connection["host"].removesuffix(".db.certhub.test")
    assert Record.objects.filter(name=relative, type="A", data=HOST).exists()

    response = api.delete(f"/v2/databases/{database['id']}")

    assert response.status_code == 204 and response.content == b""
    with pytest.raises(MySQLdb.OperationalError) as refused:
        login(connection)
    # For a user that no longer exists MariaDB answers either code, run to run.
    assert refused.value.args[0] in (ACCESS_DENIED, ACCESS_DENIED_NO_PASSWORD)
    with mariadb.admin() as admin, admin._connection.cursor() as cursor:
        cursor.execute("SHOW DATABASES LIKE %s", (connection["database"],))
        assert cursor.fetchall() == ()
    assert not Record.objects.filter(name=relative).exists()
    assert api.get(f"/v2/databases/{database['id']}").status_code == 404
    assert api.delete(f"/v2/databases/{database['id']}").status_code == 404


def test_registering_again_keeps_the_node_and_its_certificate(node, mariadb):
    again = databases.register_database_node(name=NODE, process=mariadb)

    assert again.pk == node.pk and again.certificate_id == node.certificate_id
    assert again.config_generation > node.config_generation  # delivery checks the files again
    assert (again.kind, again.address, again.port, again.platform_domain) == ("mariadb", HOST, mariadb.port, DOMAIN)
    assert again.config["admin_user"] == mariadb.admin_user and again.secret == mariadb.admin_password
    certificate = Certificate.objects.get()
    assert certificate.dns_names == ["*." + DOMAIN] and certificate.team == platform_team()
    assert certificate.state == "pending"
    assert node.certificate.team.zones.get().name == "db.certhub.test"


def version_of(certificate: Certificate, leaf_pem: str, key) -> CertificateVersion:
    leaf = x509.load_pem_x509_certificate(leaf_pem.encode())
    now = timezone.now()
    version = CertificateVersion.objects.create(
        certificate=certificate, serial=format(leaf.serial_number, "x"), not_before=now, not_after=now,
        renew_at=now, key_type="ecdsa-p256", sha1_fingerprint="a1" * 20, sha256_fingerprint="b2" * 32,
        leaf_pem=leaf_pem, private_key_pem=key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode(),
    )  # fmt: skip
    Certificate.objects.filter(pk=certificate.pk).update(current_version=version)
    return version


def test_a_pair_the_node_refuses_is_rolled_back_and_apply_config_installs_the_current_version(node, mariadb):
    before = served_certificate(HOST, mariadb.port)
    files = (mariadb.cert_path.read_bytes(), mariadb.key_path.read_bytes())
    leaf = make_leaf(make_ca("Test DB Root"), ["*." + DOMAIN])
    mismatched = version_of(node.certificate, leaf.pem, ec.generate_private_key(ec.SECP256R1()))
    target = TargetRef(Deployment.Target.DATABASE_NODE, str(node.pk), node.name, node.pk)
    deployment = delivery.plan_current(target=target, certificate=Certificate.objects.get(pk=node.certificate_id))
    assert deployment.version_id == mismatched.pk

    with pytest.raises(AdapterError) as refused:
        adapter_for(Node.objects.get(pk=node.pk)).deploy([deployment])

    assert refused.value.permanent and "FLUSH SSL" in str(refused.value)
    assert "PRIVATE KEY" not in str(refused.value)
    assert (mariadb.cert_path.read_bytes(), mariadb.key_path.read_bytes()) == files
    assert served_certificate(HOST, mariadb.port) == before

    good = version_of(node.certificate, leaf.pem, leaf.key)
    adapter = adapter_for(Node.objects.get(pk=node.pk))
    adapter.apply_config()
    assert der_serial(served_certificate(HOST, mariadb.port)) == good.serial == adapter.probe(deployment)
    assert mariadb.process.poll() is None


def test_database_is_creating_until_its_node_serves_the_current_certificate(api, node, mariadb):
    database = create(api)
    assert database["status"] == "creating"  # the platform certificate is not issued yet
    assert api.get(f"/v2/databases/{database['id']}").json()["database"]["status"] == "creating"
    leaf = make_leaf(make_ca("Test DB Root"), ["*." + DOMAIN])
    version = version_of(node.certificate, leaf.pem, leaf.key)
    target = TargetRef(Deployment.Target.DATABASE_NODE, str(node.pk), node.name, node.pk)
    delivery.plan_current(target=target, certificate=Certificate.objects.get(pk=node.certificate_id))
    assert api.get(f"/v2/databases/{database['id']}").json()["database"]["status"] == "creating"  # planned only

    delivery.deliver_node(node.pk)  # what the worker runs: the real adapter deploys, then probes

    assert Deployment.objects.get(version=version).status == "verified"
    assert der_serial(served_certificate(HOST, mariadb.port)) == version.serial
    assert api.get("/v2/databases").json()["databases"][0]["status"] == "online"
