"""Renewal end to end against Pebble: same id, new serial and key, a new version event, key-type
migration, and ACME Renewal Information where the directory offers it."""

import json
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from django.core.management import call_command
from django.utils import timezone

from certhub.models import OutboxEvent
from certhub.outbox import redis_client
from certhub.streams import StreamConsumer
from certificates import issuance as workflow
from certificates import tasks
from certificates.events import STREAM
from certificates.models import Certificate, Issuance
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


def test_renewal_information_sets_the_time_and_the_new_order_replaces_the_old(
    api, owner, zones, dns_server, ari_front, use_ca, celery_worker
):
    use_ca(ari_front)
    start, end = timezone.now() + timedelta(days=3), timezone.now() + timedelta(days=4)
    ari_front.window = (start.isoformat(), end.isoformat())
    certificate = issue(api, "ari", ["ari.alpha.test"])
    version = certificate.current_version
    assert version.ari_id and version.ari_id in ari_front.queried
    assert start <= version.renew_at <= end  # inside the CA's window, not the one-third rule
    assert certificate.renew_at == version.renew_at

    # The CA moves the window into the past (as after a revocation): the next sweep renews.
    ari_front.window = ("2020-01-01T00:00:00Z", "2020-01-02T00:00:00Z")
    type(version).objects.filter(pk=version.pk).update(ari_retry_at=datetime(2020, 1, 1, tzinfo=UTC))
    assert tasks.renewal_sweep() == 1
    renewed = wait_for_new_version(api, certificate, version.serial)
    issuance = Issuance.objects.get(certificate=certificate, reason="renew")
    assert issuance.replaces == version.ari_id  # the order named the certificate it replaces
    assert renewed.current_version.ari_id != version.ari_id
