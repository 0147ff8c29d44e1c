"""Revocation end to end: the revoke action and DELETE ?revoke=true through the API, a real Celery
worker, and Pebble, whose management interface (`/cert-status-by-serial/<hex>`) says what it revoked
and for which RFC 5280 reason."""

import hashlib
import json
import time

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from django.utils import timezone

from acme_client import accounts
from acme_client.models import AcmeAccount
from acme_client.protocol import AcmeError, AcmeSession
from certhub.models import OutboxEvent
from certhub.ports import free_port
from certificates import services, tasks
from certificates.keys import load_private_key, private_key_to_pem
from certificates.models import Certificate, CertificateVersion, Issuance
from distribution.models import ForwardingRule, LoadBalancer, Node
from tests.support.acme import wait_for_state
from tests.support.pki import make_leaf

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

CODES = {"unspecified": 0, "keyCompromise": 1, "affiliationChanged": 3, "superseded": 4, "cessationOfOperation": 5}
REPLACED = ("unspecified", "keyCompromise", "affiliationChanged", "superseded")
# A port nothing listens on: a CA that cannot be reached.
CLOSED_CA = f"https://127.0.0.1:{free_port()}/dir"


def request(api, name: str, dns_names: list[str]) -> str:
    r = api.post("/v2/certificates", {"name": name, "type": "lets_encrypt", "dns_names": dns_names}, format="json")
    assert r.status_code == 201, r.content
    return r.json()["certificate"]["id"]


def issued(api, certificate_id: str) -> CertificateVersion:
    """Wait for the certificate's first version. Tests issue one at a time: the in-process test worker
    (4 threads) is many times slower with several issuances in flight."""
    body = wait_for_state(api, certificate_id)
    assert body["state"] == "verified", body["last_error"]
    assert body["revoked"] is False and body["revocation_reason"] is None and body["revoked_at"] is None
    return Certificate.objects.get(pk=certificate_id).current_version


def ca_status(pebble, serial: str) -> dict:
    r = requests.get(f"{pebble.management_url}/cert-status-by-serial/{serial}", verify=pebble.ca_bundle, timeout=5)
    assert r.status_code == 200, r.text
    return r.json()


def revoke(api, certificate_id: str, **body):
    return api.post(f"/v2/certificates/{certificate_id}/actions", {"type": "revoke", **body}, format="json")


def wait_for(predicate, what: str, timeout: float = 30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def revoked_version(version_id: int) -> CertificateVersion | None:
    return CertificateVersion.objects.filter(pk=version_id, revoked_at__isnull=False).first()


def spki_sha256(pem: str) -> str:
    key = x509.load_pem_x509_certificate(pem.encode()).public_key()
    return hashlib.sha256(
        key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    ).hexdigest()


def revoked_events() -> list[OutboxEvent]:
    return list(OutboxEvent.objects.filter(kind="certificate.revoked").order_by("seq"))


def test_each_accepted_reason_is_revoked_at_the_ca_and_acted_on(
    api, owner, zones, dns_server, pebble, use_ca, celery_worker
):
    use_ca(pebble)
    ids, first = {}, {}
    for reason in CODES:
        ids[reason] = request(api, reason.lower(), [f"{reason.lower()}.alpha.test"])
        first[reason] = issued(api, ids[reason])
    assert {ca_status(pebble, v.serial)["Status"] for v in first.values()} == {"Valid"}

    for reason, certificate_id in sorted(ids.items(), key=lambda item: item[0] == "keyCompromise"):
        old = first[reason]
        if reason == "keyCompromise":
            # Last, with a new CertHub account (as after an account key rollover): only a request signed
            # with the certificate's own key can revoke it now, and that is how keyCompromise goes.
            AcmeAccount.objects.all().delete()
            accounts.forget_sessions()
        r = revoke(api, certificate_id, reason=reason)
        assert r.status_code == 201, r.content
        action = r.json()["action"]
        assert action["type"] == "revoke" and action["status"] == "in-progress" and action["completed_at"] is None
        assert action["resource_id"] == certificate_id and action["resource_type"] == "certificate"
        assert action["started_at"].endswith("Z")
        wait_for(lambda v=old: revoked_version(v.pk), f"{reason} confirmed by the CA")
        status = ca_status(pebble, old.serial)
        assert status["Status"] == "Revoked" and status["Reason"] == CODES[reason], (reason, status)
        old.refresh_from_db()
        assert old.revocation_reason == reason and old.revocation_error == "" and old.revoked_at is not None
        if reason == "cessationOfOperation":
            continue
        # Every other reason gets a replacement at once: a new order, a new key, renewed as usual.
        certificate = wait_for(
            lambda i=certificate_id, v=old: Certificate.objects.filter(pk=i).exclude(current_version=v).first(),
            f"the replacement of the {reason} certificate",
        )
        body = wait_for_state(api, certificate_id)
        new = certificate.current_version
        assert body["state"] == "verified" and new.serial != old.serial, body
        assert spki_sha256(new.leaf_pem) != spki_sha256(old.leaf_pem)
        assert (
            load_private_key(new.private_key_pem).public_key()
            == x509.load_pem_x509_certificate(new.leaf_pem.encode()).public_key()
        )
        assert ca_status(pebble, new.serial)["Status"] == "Valid"
        assert body["revoked"] is False and body["revocation_reason"] is None  # the current version is the new one
        assert certificate.renew_at == new.renew_at > timezone.now()
        assert Issuance.objects.filter(certificate_id=certificate_id, reason="renew_now").count() == 1

    # cessationOfOperation: revoked, kept, and never renewed again.
    ceased = ids["cessationOfOperation"]
    body = api.get(f"/v2/certificates/{ceased}").json()["certificate"]
    assert body["revoked"] is True and body["revocation_reason"] == "cessationOfOperation"
    assert body["revoked_at"].endswith("Z") and body["state"] == "verified" and body["revocation_error"] == ""
    assert body["sha1_fingerprint"] == first["cessationOfOperation"].sha1_fingerprint
    assert Certificate.objects.get(pk=ceased).renew_at is None
    assert Issuance.objects.filter(certificate_id=ceased).count() == 1
    assert tasks.renewal_sweep() == 0

    # One event per revocation, naming the revoked version and the reason, without keys.
    events = revoked_events()
    assert sorted((e.subject_id, e.payload["reason"]) for e in events) == sorted(
        (certificate_id, reason) for reason, certificate_id in ids.items()
    )
    assert {e.payload["version"]["serial"] for e in events} == {v.serial for v in first.values()}
    assert all("PRIVATE KEY" not in json.dumps(e.payload) for e in events)

    # A revoked version is not revoked twice; a redelivered task changes nothing.
    r = revoke(api, ceased, reason="keyCompromise")
    assert r.status_code == 422 and "revoked already" in r.json()["message"]
    tasks.revoke_version.apply((first["cessationOfOperation"].pk,))
    assert len(revoked_events()) == len(CODES)

    # The ceased one renews once the customer asks again: "renew" orders a new certificate and renewals resume.
    renewed = api.post(f"/v2/certificates/{ceased}/actions", {"type": "renew"}, format="json")
    assert renewed.status_code == 201, renewed.content
    body = wait_for_state(api, ceased)
    assert body["state"] == "verified" and body["revoked"] is False, body
    assert Certificate.objects.get(pk=ceased).renew_at is not None


def test_a_revocation_signed_with_the_certificate_key_needs_no_account_that_issued_it(
    api, owner, zones, dns_server, pebble, use_ca, celery_worker
):
    """What keyCompromise is sent as: signed with the certificate's own key ("jwk"), which proves
    possession; the account key of another account may not revoke it."""
    use_ca(pebble)
    version = issued(api, request(api, "leaked", ["leaked.beta.test"]))
    stranger = AcmeSession(
        pebble.directory_url, private_key_to_pem(ec.generate_private_key(ec.SECP256R1())).encode(),
        ca_bundle=pebble.ca_bundle,
    )  # fmt: skip
    stranger.register()
    with pytest.raises(AcmeError) as refused:
        stranger.revoke(version.leaf_pem, 4)
    assert refused.value.problem_type == "unauthorized" and refused.value.permanent
    assert ca_status(pebble, version.serial)["Status"] == "Valid"

    stranger.revoke(version.leaf_pem, 1, certificate_key=version.private_key_pem)
    status = ca_status(pebble, version.serial)
    assert status["Status"] == "Revoked" and status["Reason"] == 1
    with pytest.raises(AcmeError) as again:
        stranger.revoke(version.leaf_pem, 1, certificate_key=version.private_key_pem)
    assert again.value.problem_type == "alreadyRevoked" and again.value.permanent


def test_refused_revocations_change_nothing(
    api, outsider_api, owner, team, zones, dns_server, pebble, use_ca, celery_worker
):
    use_ca(pebble)
    certificate_id = request(api, "kept", ["kept.alpha.test"])
    version = issued(api, certificate_id)
    renew_at = Certificate.objects.get(pk=certificate_id).renew_at
    allowed = "unspecified, keyCompromise, affiliationChanged, superseded, cessationOfOperation"

    r = revoke(api, certificate_id, reason="privilegeWithdrawn")
    assert r.status_code == 422 and r.json()["errors"]["reason"] == [
        f"Let's Encrypt does not take privilegeWithdrawn from subscribers; must be one of {allowed}"
    ]
    for reason in ("keycompromise", "bogus", 1, ["superseded"]):
        r = revoke(api, certificate_id, reason=reason)
        assert r.status_code == 422 and r.json()["errors"]["reason"] == [f"must be one of {allowed}"], reason
    r = revoke(api, certificate_id, reason="superseded", force=True)
    assert r.status_code == 422 and "force" in r.json()["errors"]
    r = api.post(f"/v2/certificates/{certificate_id}/actions", {"type": "unrevoke"}, format="json")
    assert r.status_code == 422 and r.json()["errors"]["type"] == ["must be renew or revoke"]

    # Another team's certificate is as unknown as a missing one, through both doors.
    assert revoke(outsider_api, certificate_id, reason="keyCompromise").status_code == 404
    assert outsider_api.delete(f"/v2/certificates/{certificate_id}?revoke=true").status_code == 404
    assert api.delete(f"/v2/certificates/{certificate_id}?revoke=maybe").status_code == 422

    # cessationOfOperation while a load balancer serves it: refused, naming it, as a deletion is.
    node = Node.objects.create(name="lb-node", kind=Node.Kind.HAPROXY, active=False)
    lb = LoadBalancer.objects.create(team=team, node=node, name="web-lb", region="nyc3", ip="127.0.84.9")
    ForwardingRule.objects.create(
        load_balancer=lb, entry_protocol="https", entry_port=443, target_protocol="http", target_port=80,
        certificate_id=certificate_id,
    )  # fmt: skip
    r = revoke(api, certificate_id, reason="cessationOfOperation")
    assert r.status_code == 403 and "web-lb" in r.json()["message"] and r.json()["used_by"]

    # A custom certificate is not ours to revoke.
    leaf = make_leaf(None, ["mine.beta.test"])
    r = api.post(
        "/v2/certificates",
        {"name": "mine", "type": "custom", "private_key": leaf.key_pem, "leaf_certificate": leaf.pem,
         "allow_untrusted": True},
        format="json",
    )  # fmt: skip
    assert r.status_code == 201, r.content
    custom_id = r.json()["certificate"]["id"]
    r = revoke(api, custom_id, reason="keyCompromise")
    assert r.status_code == 422 and "only Let's Encrypt certificates" in r.json()["message"]
    r = api.delete(f"/v2/certificates/{custom_id}?revoke=true")
    assert r.status_code == 422 and Certificate.objects.filter(pk=custom_id).exists()

    time.sleep(0.5)  # time for any task that should not have been queued
    version.refresh_from_db()
    assert version.revocation_reason == "" and version.revocation_requested_at is None and version.revoked_at is None
    assert Certificate.objects.get(pk=certificate_id).renew_at == renew_at
    assert Issuance.objects.filter(certificate_id=certificate_id).count() == 1
    assert ca_status(pebble, version.serial)["Status"] == "Valid"
    assert revoked_events() == []


def test_delete_with_revoke_revokes_first_and_plain_delete_does_not(
    api, owner, zones, dns_server, pebble, use_ca, celery_worker, settings
):
    use_ca(pebble)
    gone_id = request(api, "gone", ["gone.alpha.test"])
    gone = issued(api, gone_id)
    plain_id = request(api, "plain", ["plain.alpha.test"])
    plain = issued(api, plain_id)

    # The CA cannot be reached: 503, and nothing is deleted or noted.
    CertificateVersion.objects.filter(pk=gone.pk).update(directory_url="")
    settings.ACME_DIRECTORY_URL = CLOSED_CA
    r = api.delete(f"/v2/certificates/{gone_id}?revoke=true")
    assert r.status_code == 503 and "nothing was deleted" in r.json()["message"] and r["Retry-After"] == "30"
    assert CertificateVersion.objects.get(pk=gone.pk).revocation_reason == ""
    settings.ACME_DIRECTORY_URL = pebble.directory_url

    assert api.delete(f"/v2/certificates/{gone_id}?revoke=true").status_code == 204
    assert not Certificate.objects.filter(pk=gone_id).exists()
    status = ca_status(pebble, gone.serial)
    assert status["Status"] == "Revoked" and status["Reason"] == 5
    kinds = [(e.kind, e.payload["reason"]) for e in OutboxEvent.objects.filter(subject_id=gone_id).order_by("seq")]
    assert kinds[-2:] == [("certificate.revoked", "cessationOfOperation"), ("certificate.deleted", "")]

    assert api.delete(f"/v2/certificates/{plain_id}").status_code == 204
    assert ca_status(pebble, plain.serial)["Status"] == "Valid"  # DigitalOcean's DELETE, unchanged


def test_the_ca_refusing_unreachable_or_done_before(api, owner, zones, dns_server, pebble, use_ca, celery_worker,
                                                    settings, monkeypatch):  # fmt: skip
    use_ca(pebble)
    ids = []
    for n in range(3):
        ids.append(request(api, f"c{n}", [f"c{n}.beta.test"]))
        issued(api, ids[-1])
    refused, unreachable, done_before = (Certificate.objects.get(pk=i).current_version for i in ids)

    # A certificate the CA does not know (as after a CA reset): refused for good, shown, tried again on request.
    CertificateVersion.objects.filter(pk=refused.pk).update(leaf_pem=make_leaf(None, ["c0.beta.test"]).pem)
    assert revoke(api, ids[0], reason="cessationOfOperation").status_code == 201
    body = wait_for(
        lambda: (b := api.get(f"/v2/certificates/{ids[0]}").json()["certificate"])["revocation_error"] and b,
        "the refusal",
    )
    assert body["revoked"] is False and body["revocation_reason"] == "cessationOfOperation"
    assert body["revocation_error"].startswith("the CA refused to revoke it: malformed")
    CertificateVersion.objects.filter(pk=refused.pk).update(leaf_pem=refused.leaf_pem)
    assert revoke(api, ids[0], reason="cessationOfOperation").status_code == 201
    wait_for(lambda: revoked_version(refused.pk), "the revocation asked for again")
    assert CertificateVersion.objects.get(pk=refused.pk).revocation_error == ""

    # The CA cannot be reached: the task tries again, gives up after REVOKE_ATTEMPTS, and says so.
    monkeypatch.setattr(tasks, "REVOKE_ATTEMPTS", 2)
    CertificateVersion.objects.filter(pk=unreachable.pk).update(directory_url="")
    settings.ACME_DIRECTORY_URL = CLOSED_CA
    assert revoke(api, ids[1], reason="cessationOfOperation").status_code == 201
    version = wait_for(
        lambda: CertificateVersion.objects.exclude(revocation_error="").filter(pk=unreachable.pk).first(),
        "giving up",
    )
    assert version.revoked_at is None and version.revocation_error == (
        "the CA could not take the revocation (no answer, 2 attempts)"
    )
    monkeypatch.setattr(tasks, "REVOKE_ATTEMPTS", 64)
    assert revoke(api, ids[1], reason="cessationOfOperation").status_code == 201
    time.sleep(0.5)  # the first attempt fails; the next is in two seconds
    assert revoked_version(unreachable.pk) is None
    settings.ACME_DIRECTORY_URL = pebble.directory_url
    wait_for(lambda: revoked_version(unreachable.pk), "the retry once the CA is back", timeout=10)
    assert ca_status(pebble, unreachable.serial)["Reason"] == 5

    # Revoked at the CA by other means first: alreadyRevoked is taken as done.
    accounts.session().revoke(done_before.leaf_pem, 5)
    assert revoke(api, ids[2], reason="cessationOfOperation").status_code == 201
    wait_for(lambda: revoked_version(done_before.pk), "alreadyRevoked taken as done")
    assert [e.subject_id for e in revoked_events()] == ids
    assert services.REVOCATION_REASONS == CODES
