"""A private mariadbd as a database node: TLS served and reloaded in place, per-application databases and users.

Every test starts its own node on 127.0.13.1 and a free port, so the shared server on :3306 is never touched.
"""

import ipaddress
import shutil
import stat
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import MySQLdb
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from certhub.ports import free_port
from distribution.files import write_atomic
from distribution.nodes.mariadb import MariaDBAdmin, MariaDBError, MariaDBNode, _error, served_certificate
from tests.support.pki import Issued, make_ca

HOST = "127.0.13.1"
OTHER_HOST = "127.0.13.254"


def leaf_for(ca: Issued, ip: str, dns_name: str = "db1.node.test") -> Issued:
    """A server certificate from ca naming dns_name and the IP address ip, which clients check without DNS."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns_name)]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=90))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(dns_name), x509.IPAddress(ipaddress.ip_address(ip))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    return Issued(cert, key)


def deliver(node: MariaDBNode, leaf: Issued) -> None:
    """Replace the node's key and certificate files as a delivery would: each atomically, key first."""
    write_atomic(node.key_path, leaf.key_pem, mode=0o600)
    write_atomic(node.cert_path, leaf.pem, mode=0o644)


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


@pytest.fixture(scope="module")
def initialised_datadir(tmp_path_factory) -> Path:
    """A data directory made by a node's first start, copied for each test: installing one takes seconds."""
    first = MariaDBNode.start(tmp_path_factory.mktemp("mariadb-template"), host=HOST, port=free_port(HOST))
    first.stop()
    return first.workdir / "data"


@pytest.fixture
def node(tmp_path: Path, initialised_datadir: Path) -> Iterator[MariaDBNode]:
    shutil.copytree(initialised_datadir, tmp_path / "mariadb" / "data")
    started = MariaDBNode.start(tmp_path / "mariadb", host=HOST, port=free_port(HOST))
    yield started
    started.stop()


@pytest.fixture
def admin(node: MariaDBNode) -> Iterator[MariaDBAdmin]:
    client = node.admin()
    yield client
    client.close()


@pytest.fixture
def ca(tmp_path: Path) -> tuple[Issued, Path]:
    root = make_ca("Test DB Root")
    path = tmp_path / "ca.pem"
    path.write_text(root.pem)
    return root, path


def connect_app(node: MariaDBNode, ca_file: Path | None, *, password: str = "app1 pass", **options):
    """Connect as app1_user the way an application would: the test CA, chain and name checked."""
    if ca_file is not None:
        options.setdefault("ssl", {"ca": str(ca_file)})
        options.setdefault("ssl_mode", "VERIFY_IDENTITY")
    return MySQLdb.connect(
        host=node.host, port=node.port, user="app1_user", password=password, database="app1", connect_timeout=5,
        **options,
    )  # fmt: skip


def databases(admin: MariaDBAdmin) -> set[str]:
    with admin._connection.cursor() as cursor:
        cursor.execute("SHOW DATABASES")
        return {row[0] for row in cursor.fetchall()}


def test_node_serves_a_bootstrap_certificate_for_its_address(node):
    served = x509.load_der_x509_certificate(served_certificate(node.host, node.port))

    on_disk = x509.load_pem_x509_certificate(node.cert_path.read_bytes())
    assert der(served) == der(on_disk)
    assert served.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.IPAddress
    ) == [ipaddress.ip_address(HOST)]
    assert isinstance(served.public_key(), ec.EllipticCurvePublicKey)
    assert served.public_key().curve.name == "secp256r1"
    assert stat.S_IMODE(node.key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE((node.workdir / "admin.password").stat().st_mode) == 0o600


def test_flush_ssl_serves_the_delivered_certificate_without_a_restart(node, admin, ca):
    bootstrap = served_certificate(node.host, node.port)
    pid = node.process.pid
    with admin._connection.cursor() as cursor:
        cursor.execute("SELECT CONNECTION_ID()")
        (connection_id,) = cursor.fetchone()
    leaf = leaf_for(ca[0], HOST)

    deliver(node, leaf)
    assert served_certificate(node.host, node.port) == bootstrap, "served before the flush"
    admin.flush_ssl()

    assert served_certificate(node.host, node.port) == der(leaf.cert)
    # Same process, and the admin session opened before the flush is still the same session.
    assert node.process.poll() is None
    assert node.process.pid == pid == int((node.workdir / "mariadbd.pid").read_text())
    with admin._connection.cursor() as cursor:
        cursor.execute("SELECT CONNECTION_ID()")
        assert cursor.fetchone() == (connection_id,)


def test_flush_ssl_with_a_mismatched_key_fails_and_keeps_the_old_certificate(node, admin, ca):
    bootstrap = served_certificate(node.host, node.port)
    leaf, stranger = leaf_for(ca[0], HOST), leaf_for(ca[0], HOST)
    write_atomic(node.key_path, stranger.key_pem)
    write_atomic(node.cert_path, leaf.pem, mode=0o644)

    with pytest.raises(MariaDBError) as refused:
        admin.flush_ssl()

    assert refused.value.code == 1105
    assert "SSL" in str(refused.value)
    assert "PRIVATE KEY" not in str(refused.value)
    assert served_certificate(node.host, node.port) == bootstrap


def test_database_user_connects_with_the_certificate_verified_by_name(node, admin, ca):
    deliver(node, leaf_for(ca[0], HOST))
    admin.flush_ssl()
    admin.create_database("app1", "app1_user", "app1 pass")

    connection = connect_app(node, ca[1])
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT DATABASE(), CURRENT_USER()")
            assert cursor.fetchone() == ("app1", "app1_user@%")
            cursor.execute("SHOW SESSION STATUS LIKE 'Ssl_version'")
            assert cursor.fetchone()[1].startswith("TLSv1.")
            cursor.execute("CREATE TABLE t (id INT PRIMARY KEY)")
    finally:
        connection.close()


def test_verification_refuses_another_ca_and_another_name(node, admin, ca, tmp_path):
    admin.create_database("app1", "app1_user", "app1 pass")
    other_ca = tmp_path / "other-ca.pem"
    other_ca.write_text(make_ca("Some Other Root").pem)
    deliver(node, leaf_for(ca[0], HOST))
    admin.flush_ssl()
    connect_app(node, ca[1]).close()  # the right CA and name pass

    with pytest.raises(MySQLdb.OperationalError) as wrong_ca:
        connect_app(node, other_ca)
    assert wrong_ca.value.args[0] == 2026  # CR_SSL_CONNECTION_ERROR

    # The right CA, but a certificate for another address: only the name check can refuse this.
    elsewhere = leaf_for(ca[0], OTHER_HOST, dns_name="db2.node.test")
    deliver(node, elsewhere)
    admin.flush_ssl()
    assert served_certificate(node.host, node.port) == der(elsewhere.cert)
    with pytest.raises(MySQLdb.OperationalError) as wrong_name:
        connect_app(node, ca[1])
    assert wrong_name.value.args[0] == 2026


def test_database_user_without_tls_is_refused(node, admin, ca):
    deliver(node, leaf_for(ca[0], HOST))
    admin.flush_ssl()
    admin.create_database("app1", "app1_user", "app1 pass")

    with pytest.raises(MySQLdb.OperationalError) as refused:
        connect_app(node, None, ssl_mode="DISABLED")
    assert refused.value.args[0] == 1045  # ER_ACCESS_DENIED_ERROR: REQUIRE SSL, the password is right
    connect_app(node, ca[1]).close()


def test_create_database_again_keeps_the_data_and_sets_the_new_password(node, admin, ca):
    deliver(node, leaf_for(ca[0], HOST))
    admin.flush_ssl()
    admin.create_database("app1", "app1_user", "first pass")
    connection = connect_app(node, ca[1], password="first pass")
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE kept (id INT PRIMARY KEY)")
    connection.close()

    admin.create_database("app1", "app1_user", "second pass")

    with pytest.raises(MySQLdb.OperationalError):
        connect_app(node, ca[1], password="first pass")
    connection = connect_app(node, ca[1], password="second pass")
    with connection.cursor() as cursor:
        cursor.execute("SHOW TABLES")
        assert cursor.fetchall() == (("kept",),)
    connection.close()


def test_drop_database_removes_the_database_and_its_user(node, admin):
    admin.create_database("app1", "app1_user", "app1 pass")
    assert "app1" in databases(admin)

    admin.drop_database("app1", "app1_user")
    admin.drop_database("app1", "app1_user")  # already gone: nothing to do

    assert "app1" not in databases(admin)
    with admin._connection.cursor() as cursor:
        cursor.execute("SELECT COUNT(*) FROM mysql.user WHERE user = 'app1_user'")
        assert cursor.fetchone() == (0,)


@pytest.mark.parametrize("name", ["app1`; DROP DATABASE mysql; --", "app-1", "", "a" * 65, "1app"])
def test_names_outside_the_pattern_are_refused_before_the_server(node, admin, name):
    before = databases(admin)

    with pytest.raises(ValueError, match="invalid database name"):
        admin.create_database(name, "app1_user", "app1 pass")
    with pytest.raises(ValueError, match="invalid user name"):
        admin.create_database("app1", name, "app1 pass")

    assert databases(admin) == before


def test_restart_reuses_the_data_certificate_and_admin_password(node):
    with node.admin() as admin:
        admin.create_database("app1", "app1_user", "app1 pass")
    served, password, pid = served_certificate(node.host, node.port), node.admin_password, node.process.pid
    node.stop()

    again = MariaDBNode.start(node.workdir, host=node.host, port=node.port)
    try:
        assert again.process.pid != pid
        assert again.admin_password == password
        assert served_certificate(again.host, again.port) == served
        with again.admin() as client:
            assert "app1" in databases(client)
    finally:
        again.stop()


def test_wrong_admin_password_is_a_mariadb_error_without_the_password(node):
    with pytest.raises(MariaDBError) as refused:
        MariaDBAdmin(node.host, node.port, node.admin_user, "not-the-password-x9")
    assert refused.value.code == 1045
    assert "not-the-password-x9" not in str(refused.value)
    assert refused.value.__suppress_context__


def test_errors_mask_a_password_the_server_echoes():
    echoed = MySQLdb.ProgrammingError(1064, "near 'IDENTIFIED BY 'hunter2' REQUIRE SSL' at line 1")

    error = _error(echoed, "hunter2")

    assert "hunter2" not in str(error)
    assert error.code == 1064


def test_probe_of_a_closed_port_raises_oserror():
    with pytest.raises(OSError):
        served_certificate(HOST, free_port(HOST), timeout=2)
