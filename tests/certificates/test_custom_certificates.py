"""Custom certificates: validated strictly, stored with the key encrypted, never renewed by us."""

import socket
import ssl
import threading
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec
from django.db import connection

from certhub.models import OutboxEvent
from certificates import renewal
from certificates.models import Certificate, CertificateVersion
from dns_zones import services as zone_services
from tests.support.pki import make_ca, make_leaf, rsa_key

pytestmark = pytest.mark.django_db


@pytest.fixture
def pki(settings, tmp_path):
    root = make_ca("CertHub Test Root")
    intermediate = make_ca("CertHub Test Intermediate", issuer=root)
    bundle = tmp_path / "roots.pem"
    bundle.write_text(root.pem)
    settings.CERTHUB_CUSTOM_TRUST_BUNDLE = str(bundle)
    return root, intermediate


def upload(api, leaf, chain: str = "", key_pem: str | None = None, name: str = "mine", **extra):
    body = {
        "name": name, "type": "custom", "private_key": key_pem if key_pem is not None else leaf.key_pem,
        "leaf_certificate": getattr(leaf, "pem", leaf), "certificate_chain": chain, **extra,
    }  # fmt: skip
    return api.post("/v2/certificates", body, format="json")


def assert_refused(r, field: str, code: str, *secrets: str):
    assert r.status_code == 422, r.content
    body = r.json()
    assert body["id"] == "unprocessable_entity" and body["error_code"] == code
    assert field in body["errors"] and body["message"].startswith(f"{field}: ")
    for secret in secrets:  # the input is never echoed back (a line of it, where it has several)
        lines = secret.strip().splitlines()
        assert (lines[1] if len(lines) > 2 else secret.strip()) not in r.content.decode()
    assert not Certificate.objects.exists() and not CertificateVersion.objects.exists()


def test_upload_with_chain_is_stored_verified_with_names_from_the_certificate(api, team, pki):
    _, intermediate = pki
    zone_services.zone_create(team=team, name="mine.test")
    leaf = make_leaf(intermediate, ["www.mine.test", "shop.elsewhere.test"])
    r = upload(api, leaf, intermediate.pem)
    assert r.status_code == 201, r.content
    body = r.json()["certificate"]
    assert body["type"] == "custom" and body["state"] == "verified"
    assert body["dns_names"] == ["www.mine.test", "shop.elsewhere.test"]
    assert body["not_after"] == leaf.cert.not_valid_after_utc.isoformat().replace("+00:00", "Z")
    assert (
        body["sha1_fingerprint"]
        == leaf.cert.fingerprint(__import__("cryptography.hazmat.primitives.hashes", fromlist=["SHA1"]).SHA1()).hex()
    )
    assert body["names_outside_zones"] == ["shop.elsewhere.test"]  # allowed, but shown
    assert "PRIVATE KEY" not in r.content.decode()
    certificate = Certificate.objects.get(pk=body["id"])
    assert certificate.renew_at is None  # never renewed
    assert certificate.current_version.chain_pem == intermediate.pem
    with connection.cursor() as cursor:
        cursor.execute("SELECT private_key_pem FROM certificates_certificateversion")
        assert cursor.fetchone()[0].startswith("gAAAAA")
    assert OutboxEvent.objects.filter(kind="certificate.version_created", subject_id=str(certificate.pk)).count() == 1


def test_chain_out_of_order_is_reordered_and_a_repeated_leaf_dropped(api, pki):
    _, intermediate = pki
    second = make_ca("Second Intermediate", issuer=intermediate)
    leaf = make_leaf(second, ["deep.mine.test"])
    r = upload(api, leaf, intermediate.pem + leaf.pem + second.pem)  # wrong order, leaf repeated
    assert r.status_code == 201, r.content
    version = Certificate.objects.get().current_version
    assert version.chain_pem == second.pem + intermediate.pem


@pytest.mark.parametrize(
    ("make", "field", "code"),
    [
        ("missing_intermediate", "certificate_chain", "incomplete_chain"),
        ("mismatched_key", "private_key", "key_mismatch"),
        ("expired", "leaf_certificate", "expired"),
        ("not_yet_valid", "leaf_certificate", "not_yet_valid"),
        ("encrypted_key", "private_key", "encrypted_key"),
        ("rsa_1024", "private_key", "weak_key"),
        ("dsa", "private_key", "unsupported_key"),
        ("p521", "private_key", "unsupported_key"),
        ("two_keys", "private_key", "multiple_keys"),
        ("garbage_key", "private_key", "malformed_pem"),
        ("truncated_key", "private_key", "malformed_pem"),
        ("empty_key", "private_key", "missing"),
        ("der_leaf", "leaf_certificate", "malformed_pem"),
        ("truncated_leaf", "leaf_certificate", "malformed_pem"),
        ("two_leaves", "leaf_certificate", "multiple_certificates"),
        ("self_signed", "leaf_certificate", "self_signed"),
        ("unrelated_chain", "certificate_chain", "unrelated_chain"),
        ("oversized_field", "leaf_certificate", "too_large"),
    ],
)
def test_bad_uploads_are_refused_with_a_code_and_nothing_stored(api, pki, make, field, code):
    _, intermediate = pki
    now = datetime.now(UTC)
    leaf = make_leaf(intermediate, ["www.mine.test"])
    key_pem, leaf_pem, chain = leaf.key_pem, leaf.pem, intermediate.pem
    if make == "missing_intermediate":
        chain = ""
    elif make == "mismatched_key":
        key_pem = make_leaf(intermediate, ["other.mine.test"]).key_pem
    elif make == "expired":
        leaf = make_leaf(
            intermediate, ["www.mine.test"], not_before=now - timedelta(days=90), not_after=now - timedelta(hours=1)
        )
        key_pem, leaf_pem = leaf.key_pem, leaf.pem
    elif make == "not_yet_valid":
        leaf = make_leaf(intermediate, ["www.mine.test"], not_before=now + timedelta(days=1))
        key_pem, leaf_pem = leaf.key_pem, leaf.pem
    elif make == "encrypted_key":
        key_pem = leaf.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(b"pw")
        ).decode()
    elif make in ("rsa_1024", "dsa", "p521"):
        key = {"rsa_1024": lambda: rsa_key(1024), "dsa": lambda: dsa.generate_private_key(2048),
               "p521": lambda: ec.generate_private_key(ec.SECP521R1())}[make]()  # fmt: skip
        leaf = make_leaf(intermediate, ["www.mine.test"], key=key) if make != "dsa" else leaf
        key_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()
        leaf_pem = leaf.pem
    elif make == "two_keys":
        key_pem = leaf.key_pem + make_leaf(intermediate, ["x.mine.test"]).key_pem
    elif make == "garbage_key":
        key_pem = "hello, this is not a key"
    elif make == "truncated_key":
        key_pem = leaf.key_pem[: len(leaf.key_pem) // 2] + "\n-----END PRIVATE KEY-----\n"
    elif make == "empty_key":
        key_pem = ""
    elif make == "der_leaf":
        leaf_pem = leaf.cert.public_bytes(serialization.Encoding.DER).decode("latin-1")
    elif make == "truncated_leaf":
        leaf_pem = leaf.pem[:200]
    elif make == "two_leaves":
        leaf_pem = leaf.pem + intermediate.pem
    elif make == "self_signed":
        leaf = make_leaf(None, ["www.mine.test"])
        key_pem, leaf_pem, chain = leaf.key_pem, leaf.pem, ""
    elif make == "unrelated_chain":
        chain = intermediate.pem + make_ca("Stranger").pem
    elif make == "oversized_field":
        leaf_pem = leaf.pem * 120  # over 64 KB
    r = upload(api, leaf_pem, chain, key_pem=key_pem)
    assert_refused(r, field, code, *([key_pem] if key_pem.strip() else []))


def test_self_signed_is_accepted_when_meant_to_be_untrusted(api, pki):
    leaf = make_leaf(None, ["internal.mine.test"])
    assert upload(api, leaf, allow_untrusted=True).status_code == 201


def test_a_small_clock_skew_is_allowed(api, pki):
    leaf = make_leaf(pki[1], ["soon.mine.test"], not_before=datetime.now(UTC) + timedelta(minutes=2))
    assert upload(api, leaf, pki[1].pem).status_code == 201


def test_a_ten_megabyte_body_is_refused_before_parsing(api, pki):
    r = api.post("/v2/certificates", b'{"name": "' + b"x" * (10 * 1024 * 1024) + b'"}', content_type="application/json")
    assert r.status_code == 413 and r.json()["id"] == "request_entity_too_large"
    assert not Certificate.objects.exists()


def test_custom_certificates_are_never_renewed(api, pki):
    leaf = make_leaf(pki[1], ["www.mine.test"], not_before=datetime.now(UTC) - timedelta(days=80))
    assert upload(api, leaf, pki[1].pem).status_code == 201
    assert renewal.renewal_sweep(now=datetime.now(UTC) + timedelta(days=5)) == 0
    certificate = Certificate.objects.get()
    r = api.post(f"/v2/certificates/{certificate.pk}/actions", {"type": "renew"}, format="json")
    assert r.status_code == 422


def test_replacing_the_pems_keeps_the_id_and_publishes_a_new_version(api, pki):
    first = make_leaf(pki[1], ["www.mine.test"])
    certificate_id = upload(api, first, pki[1].pem).json()["certificate"]["id"]
    second = make_leaf(pki[1], ["www.mine.test", "api.mine.test"])
    body = {"private_key": second.key_pem, "leaf_certificate": second.pem, "certificate_chain": pki[1].pem}
    r = api.put(f"/v2/certificates/{certificate_id}", body, format="json")
    assert r.status_code == 200, r.content
    assert r.json()["certificate"]["id"] == certificate_id
    assert r.json()["certificate"]["dns_names"] == ["www.mine.test", "api.mine.test"]
    certificate = Certificate.objects.get(pk=certificate_id)
    assert certificate.versions.count() == 2
    versions_published = OutboxEvent.objects.filter(subject_id=certificate_id, kind="certificate.version_created")
    assert [e.payload["version"]["serial"] for e in versions_published] == [
        format(first.cert.serial_number, "x"),
        format(second.cert.serial_number, "x"),
    ]
    bad = api.put(f"/v2/certificates/{certificate_id}", {**body, "private_key": first.key_pem}, format="json")
    assert bad.status_code == 422 and bad.json()["error_code"] == "key_mismatch"
    assert certificate.versions.count() == 2


def test_expired_custom_certificate_shows_as_error_and_warnings_go_out(api, pki, owner):
    import time_machine
    from django.core import mail

    from certificates import notifications

    leaf = make_leaf(pki[1], ["www.mine.test"], not_after=datetime.now(UTC) + timedelta(days=40))
    certificate_id = upload(api, leaf, pki[1].pem).json()["certificate"]["id"]
    expiry = leaf.cert.not_valid_after_utc
    for days in (30, 14, 7, 1):
        with time_machine.travel(expiry - timedelta(days=days), tick=False):
            assert notifications.notification_sweep() == 1
    with time_machine.travel(expiry + timedelta(minutes=1), tick=False):
        assert notifications.notification_sweep() == 1
        assert notifications.notification_sweep() == 0
    body = api.get(f"/v2/certificates/{certificate_id}").json()["certificate"]
    assert body["state"] == "error" and body["last_error"].startswith("expired on")
    assert len(mail.outbox) == 5 and mail.outbox[-1].subject.endswith("has expired")


def test_uploaded_certificate_serves_a_real_tls_handshake(api, pki, tmp_path):
    root, intermediate = pki
    leaf = make_leaf(intermediate, ["tls.mine.test"])
    certificate_id = upload(api, leaf, intermediate.pem).json()["certificate"]["id"]
    version = Certificate.objects.get(pk=certificate_id).current_version  # decrypted from the database
    (tmp_path / "chain.pem").write_text(version.leaf_pem + version.chain_pem)
    (tmp_path / "key.pem").write_text(version.private_key_pem)

    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(tmp_path / "chain.pem", tmp_path / "key.pem")
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve():
        conn, _ = listener.accept()
        with server_context.wrap_socket(conn, server_side=True) as tls:
            tls.sendall(b"hello over tls")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    client_context = ssl.create_default_context(cadata=root.pem)
    with (
        socket.create_connection(("127.0.0.1", port)) as raw,
        client_context.wrap_socket(raw, server_hostname="tls.mine.test") as tls,
    ):
        assert tls.recv(100) == b"hello over tls"
        assert tls.getpeercert()["subjectAltName"] == (("DNS", "tls.mine.test"),)
    thread.join(5)
    listener.close()


def test_upload_through_the_panel_by_paste_and_by_file(owner, team, pki):
    from django.core.files.uploadedfile import SimpleUploadedFile
    from django.test import Client

    client = Client()
    client.force_login(owner)
    leaf = make_leaf(pki[1], ["paste.mine.test"])
    r = client.post("/certificates/upload", {
        "name": "pasted", "leaf_certificate": leaf.pem, "private_key": leaf.key_pem, "certificate_chain": pki[1].pem,
    })  # fmt: skip
    certificate = Certificate.objects.get(name="pasted")
    assert r.status_code == 302 and r["Location"] == f"/certificates/{certificate.pk}/"
    page = client.get(r["Location"]).content.decode()
    assert "Not in your hosted zones: paste.mine.test" in page and "PRIVATE KEY" not in page

    newer = make_leaf(pki[1], ["paste.mine.test"])
    r = client.post(f"/certificates/{certificate.pk}/upload", {
        "leaf_certificate_file": SimpleUploadedFile("cert.pem", newer.pem.encode()),
        "private_key_file": SimpleUploadedFile("key.pem", newer.key_pem.encode()),
        "certificate_chain_file": SimpleUploadedFile("chain.pem", pki[1].pem.encode()),
    })  # fmt: skip
    assert r.status_code == 302
    assert certificate.versions.count() == 2

    r = client.post("/certificates/upload", {"name": "bad", "leaf_certificate": leaf.pem, "private_key": newer.key_pem})
    assert r.status_code == 200 and "does not match the leaf certificate" in r.content.decode()
    assert newer.key_pem.splitlines()[1] not in r.content.decode()  # the key is not echoed back
    assert not Certificate.objects.filter(name="bad").exists()
