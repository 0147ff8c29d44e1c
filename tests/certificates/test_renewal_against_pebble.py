"""Renewal end to end against Pebble: same id, new serial and key, a new version event, key-type
migration, and ACME Renewal Information (RFC 9773) from a CA that offers it: Pebble 2.6, Debian
trixie's (`pebble_ari`); bookworm's Pebble 2.4 (`pebble`) offers none, so the one-third rule applies."""

import json
import time
import uuid
from datetime import datetime, timedelta

import pytest
import requests
from acme.client import ClientV2
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from django.core.management import call_command
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from acme_client import accounts
from acme_client.protocol import AcmeError, ari_certificate_id
from certhub.models import OutboxEvent
from certhub.outbox import redis_client
from certhub.streams import StreamConsumer
from certificates import issuance as workflow
from certificates import renewal, services, tasks
from certificates.events import STREAM
from certificates.models import Certificate, CertificateVersion, Issuance
from tests.certificates.conftest import wait_for_state

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def issue(api, name, dns_names, **extra) -> Certificate:
    r = api.post(
        "/v2/certificates", {"name": name, "type": "lets_encrypt", "dns_names": dns_names, **extra}, format="json"
    )
    assert r.status_code == 201, r.content
    body = wait_for_state(api, r.json()["certificate"]["id"])
    assert body["state"] == "verified", body["last_error"]
    return Certificate.objects.select_related("current_version").get(pk=body["id"])


def make_due(certificate: Certificate) -> None:
    Certificate.objects.filter(pk=certificate.pk).update(renew_at=timezone.now() - timedelta(seconds=1))


def wait_for_new_version(api, certificate: Certificate, old_serial: str) -> Certificate:
    for _ in range(600):
        body = wait_for_state(api, str(certificate.pk))
        fresh = Certificate.objects.select_related("current_version").get(pk=certificate.pk)
        if fresh.current_version.serial != old_serial:
            return fresh
        time.sleep(0.05)
    raise AssertionError(f"no new version: {body}")


def test_due_certificate_is_renewed_by_the_sweep_keeping_its_id(
    api, owner, zones, dns_server, pebble, use_ca, celery_worker
):
    use_ca(pebble)
    consumer = StreamConsumer(STREAM, f"test-{uuid.uuid4().hex}", "c1", redis_client=redis_client(), block_ms=None)
    consumer.ensure_group(start_id="$")  # only what is published from now on
    certificate = issue(api, "renewed", ["renew.alpha.test"])
    first = certificate.current_version
    assert first.renew_at == first.not_before + (first.not_after - first.not_before) / 3
    assert certificate.renew_at == first.renew_at and tasks.renewal_sweep() == 0  # not due yet

    make_due(certificate)
    assert tasks.renewal_sweep() == 1
    renewed = wait_for_new_version(api, certificate, first.serial)
    second = renewed.current_version
    assert renewed.pk == certificate.pk and renewed.state == "verified"
    assert second.serial != first.serial
    assert second.sha256_fingerprint != first.sha256_fingerprint
    old_key = x509.load_pem_x509_certificate(first.leaf_pem.encode()).public_key()
    new_key = x509.load_pem_x509_certificate(second.leaf_pem.encode()).public_key()
    assert old_key != new_key  # a fresh key every version
    assert renewed.versions.count() == 2  # the previous version is kept
    assert renewed.renew_at == second.renew_at > timezone.now()
    assert Issuance.objects.filter(certificate=certificate, reason="renew", step="done").count() == 1

    # Both versions reached the consumer group through the outbox relay, in order, without keys.
    seen = []
    for _ in range(100):
        consumer.process(seen.append, count=10)
        if len(seen) >= 2:
            break
        time.sleep(0.05)
    versions = [m.payload["version"]["serial"] for m in seen if m.kind == "certificate.version_created"]
    assert versions == [first.serial, second.serial]
    assert {m.subject_id for m in seen} == {str(certificate.pk)}
    assert all("PRIVATE KEY" not in json.dumps(m.payload) for m in seen)
    redis_client().xgroup_destroy(STREAM, consumer.group)


def test_certificate_deleted_mid_renewal_stops_cleanly(api, owner, zones, dns_server, pebble, use_ca, settings):
    use_ca(pebble)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tasks.advance_issuance, "delay", lambda *args, **kwargs: None)
        patch.setattr(tasks.advance_issuance, "apply_async", lambda *args, **kwargs: None)
        certificate = Certificate.objects.create(
            team=owner.teams.get(), name="doomed", dns_names=["doomed.alpha.test"], names_key="doomed.alpha.test",
            state="verified", renew_at=timezone.now() - timedelta(seconds=1),
        )  # fmt: skip
        assert tasks.renewal_sweep() == 1
    issuance = Issuance.objects.get(certificate=certificate)
    for _ in range(3):  # order created, challenge published
        workflow.advance(issuance.pk)
    assert zones[0].records.filter(type="TXT").exists()
    assert api.delete(f"/v2/certificates/{certificate.pk}").status_code == 204
    assert workflow.advance(issuance.pk) is None  # the worker's next step finds nothing to do
    assert not Issuance.objects.exists()
    assert not zones[0].records.filter(type="TXT").exists()  # its challenge records went with it
    event = OutboxEvent.objects.get(kind="certificate.deleted")
    assert event.subject_id == str(certificate.pk)


def test_rsa_certificate_marked_for_migration_comes_back_ecdsa(
    api, owner, zones, dns_server, pebble, use_ca, celery_worker
):
    use_ca(pebble)
    certificate = issue(api, "legacy", ["legacy.beta.test"], key_type="rsa-2048")
    assert certificate.current_version.key_type == "rsa-2048"
    call_command("migrate_key_type", "--from", "rsa", "--to", "ecdsa-p256")
    make_due(certificate)
    assert tasks.renewal_sweep() == 1
    renewed = wait_for_new_version(api, certificate, certificate.current_version.serial)
    leaf = x509.load_pem_x509_certificate(renewed.current_version.leaf_pem.encode())
    assert isinstance(leaf.public_key(), ec.EllipticCurvePublicKey) and leaf.public_key().curve.name == "secp256r1"
    assert renewed.current_version.key_type == "ecdsa-p256"


def renewal_window(pebble, ari_id: str) -> tuple[datetime, datetime, int]:
    """Ask the CA for its suggested window for a certificate, as CertHub does (RFC 9773 4.2)."""
    directory = requests.get(pebble.directory_url, verify=pebble.ca_bundle, timeout=5).json()
    r = requests.get(f"{directory['renewalInfo']}/{ari_id}", verify=pebble.ca_bundle, timeout=5)
    assert r.status_code == 200, r.text
    window = r.json()["suggestedWindow"]
    return parse_datetime(window["start"]), parse_datetime(window["end"]), int(r.headers["Retry-After"])


def ari_queries(pebble) -> int:
    # Pebble logs each request by its route, without the certificate's id.
    return pebble.log_path.read_text().count("GET /draft-ietf-acme-ari-03/renewalInfo/ ")


def test_renewal_information_from_the_ca_sets_the_time_and_the_renewal_replaces_the_old(
    api, owner, zones, dns_server, pebble_ari, use_ca, celery_worker
):
    use_ca(pebble_ari)
    queries_before = ari_queries(pebble_ari)
    asked_at = timezone.now()
    certificate = issue(api, "ari", ["ari.alpha.test"])
    version = certificate.current_version
    leaf = x509.load_pem_x509_certificate(version.leaf_pem.encode())
    assert version.ari_id == ari_certificate_id(leaf)
    assert ari_queries(pebble_ari) == queries_before + 1  # CertHub asked the CA once, for the new certificate

    # Pebble's window: 48 hours around the point two thirds into the lifetime (5 years), far from
    # CertHub's own one-third rule; Retry-After 6 hours.
    start, end, retry_after = renewal_window(pebble_ari, version.ari_id)
    assert end - start == timedelta(hours=48) and retry_after == 6 * 3600
    assert start <= version.renew_at <= end  # inside the CA's window
    assert renewal.lifetime_renewal_time(version.not_before, version.not_after) < start - timedelta(days=365)
    assert certificate.renew_at == version.renew_at
    assert asked_at + timedelta(hours=6) <= version.ari_retry_at <= timezone.now() + timedelta(hours=6)

    # Once Retry-After has passed, the sweep reads the window again: still years away, nothing due.
    CertificateVersion.objects.filter(pk=version.pk).update(ari_retry_at=timezone.now() - timedelta(seconds=1))
    assert tasks.renewal_sweep() == 0
    assert ari_queries(pebble_ari) == queries_before + 3  # ours, and the sweep's refresh
    assert start <= Certificate.objects.get(pk=certificate.pk).renew_at <= end

    # The certificate is revoked at the CA: its window moves into the past, and the next sweep renews.
    acme = accounts.session()
    ClientV2(acme.directory, acme.net).revoke(leaf, 0)
    start, end, _ = renewal_window(pebble_ari, version.ari_id)
    assert end < timezone.now() and end - start == timedelta(minutes=30)
    CertificateVersion.objects.filter(pk=version.pk).update(ari_retry_at=timezone.now() - timedelta(seconds=1))
    assert tasks.renewal_sweep() == 1
    renewed = wait_for_new_version(api, certificate, version.serial)
    renewal_issuance = Issuance.objects.get(certificate=certificate, reason="renew")
    assert renewal_issuance.replaces == version.ari_id  # the order named the certificate it replaces...
    first_order = Issuance.objects.get(certificate=certificate, reason="issue").order_url.rsplit("/", 1)[1]
    new_order = renewal_issuance.order_url.rsplit("/", 1)[1]
    assert f'ARI: order "{new_order}" is a replacement of "{first_order}"' in pebble_ari.log_path.read_text()
    new_version = renewed.current_version
    assert new_version.ari_id == ari_certificate_id(x509.load_pem_x509_certificate(new_version.leaf_pem.encode()))
    assert new_version.ari_id != version.ari_id
    start, end, _ = renewal_window(pebble_ari, new_version.ari_id)
    assert start <= new_version.renew_at <= end  # the new version follows the CA's window too

    # ...and the CA holds it to that: the same certificate cannot be replaced twice.
    with pytest.raises(AcmeError) as refused:
        acme.new_order(["ari.alpha.test"], replaces=version.ari_id)
    assert refused.value.status == 409 and refused.value.permanent
    assert refused.value.problem_type == "malformed"  # the problem document, read back from the 409

    # A renewal naming it anyway (a stale replaces) orders without it instead of failing for good.
    stale = services.issuance_start(
        certificate=Certificate.objects.get(pk=certificate.pk), reason="renew", replaces=version.ari_id
    )
    wait_for_new_version(api, certificate, new_version.serial)
    stale.refresh_from_db()
    assert stale.step == Issuance.Step.DONE and stale.replaces == "" and stale.orders_created == 1
