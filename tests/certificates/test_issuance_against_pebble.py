"""Let's Encrypt certificates end to end: the API, a real Celery worker, Pebble validating every
DNS-01 challenge by querying CertHub's own authoritative DNS server."""

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509 import DNSName
from cryptography.x509.verification import PolicyBuilder, Store
from django.core import mail
from django.db import connection

from certificates.keys import load_private_key
from certificates.models import Certificate, CertificateVersion, Issuance
from tests.certificates.conftest import wait_for_state

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def request(api, name: str, dns_names: list[str], **extra) -> dict:
    r = api.post(
        "/v2/certificates", {"name": name, "type": "lets_encrypt", "dns_names": dns_names, **extra}, format="json"
    )
    assert r.status_code == 201, r.content
    body = r.json()["certificate"]
    assert body["state"] == "pending" and body["not_after"] == "" and body["sha1_fingerprint"] == ""
    return body


def verify_chain(version: CertificateVersion, root_pem: str, name: str) -> x509.Certificate:
    leaf = x509.load_pem_x509_certificate(version.leaf_pem.encode())
    intermediates = x509.load_pem_x509_certificates(version.chain_pem.encode())
    roots = x509.load_pem_x509_certificates(root_pem.encode())
    verifier = PolicyBuilder().store(Store(roots)).build_server_verifier(DNSName(name))
    chain = verifier.verify(leaf, intermediates)
    assert len(chain) >= 2
    return leaf


def test_one_name_is_issued_and_verifies_against_pebbles_root(
    api, owner, zones, dns_server, pebble, use_ca, celery_worker
):
    use_ca(pebble)
    created = request(api, "www", ["WWW.alpha.test."])
    body = wait_for_state(api, created["id"])
    assert body["state"] == "verified", body["last_error"]
    assert body["dns_names"] == ["www.alpha.test"] and body["key_type"] == "ecdsa-p256"
    assert body["id"] == created["id"] and body["step"] == "done"
    assert len(body["sha1_fingerprint"]) == 40 and body["not_after"].endswith("Z")

    version = Certificate.objects.get(pk=body["id"]).current_version
    leaf = verify_chain(version, pebble.root_pem(), "www.alpha.test")
    assert isinstance(leaf.public_key(), ec.EllipticCurvePublicKey)
    assert leaf.public_key().curve.name == "secp256r1"
    key = load_private_key(version.private_key_pem)
    assert key.public_key() == leaf.public_key()
    # The challenge record is gone once the certificate is issued.
    assert not zones[0].records.filter(type="TXT").exists()
    # The team hears about it.
    assert any("is ready" in m.subject and m.to == ["owner@example.test"] for m in mail.outbox)
    assert "PRIVATE KEY" not in str(api.get(f"/v2/certificates/{body['id']}").content)


def test_wildcard_and_apex_across_two_zones_with_rsa(
    api, owner, zones, dns_server, pebble_nonce_reject, use_ca, celery_worker
):
    pebble = use_ca(pebble_nonce_reject)  # 50% of good nonces rejected by the CA
    created = request(api, "multi", ["*.alpha.test", "alpha.test", "beta.test"], key_type="rsa-2048")
    body = wait_for_state(api, created["id"])
    assert body["state"] == "verified", body["last_error"]
    version = Certificate.objects.get(pk=body["id"]).current_version
    leaf = verify_chain(version, pebble.root_pem(), "anything.alpha.test")
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sorted(san.get_values_for_type(x509.DNSName)) == ["*.alpha.test", "alpha.test", "beta.test"]
    assert isinstance(leaf.public_key(), rsa.RSAPublicKey) and leaf.public_key().key_size == 2048
    assert version.key_type == "rsa-2048"
    # Wildcard and apex put two values at one name; the issuance recorded both.
    issuance = Issuance.objects.get(certificate_id=body["id"])
    names = [a["record_name"] for a in issuance.authorizations if "record_name" in a]
    assert names.count("_acme-challenge.alpha.test") == 2


def test_database_holds_no_plaintext_key(api, owner, zones, dns_server, pebble, use_ca, celery_worker):
    use_ca(pebble)
    body = wait_for_state(api, request(api, "raw", ["raw.beta.test"])["id"])
    assert body["state"] == "verified", body["last_error"]
    with connection.cursor() as cursor:
        cursor.execute("SELECT private_key_pem FROM certificates_certificateversion")
        (stored,) = cursor.fetchone()
        cursor.execute("SELECT key_pem FROM acme_client_acmeaccount")
        (account_key,) = cursor.fetchone()
        cursor.execute("SELECT private_key_pem FROM certificates_issuance")
        (issuance_key,) = cursor.fetchone()
    for raw in (stored, account_key):
        assert raw.startswith("gAAAAA") and "PRIVATE KEY" not in raw  # a Fernet token
    assert issuance_key == ""  # the finished order forgets its copy
    assert "PRIVATE KEY" in CertificateVersion.objects.get().private_key_pem
