"""Issuance keeps inside the CA's limits: orders past the budget wait (saying why) instead of being
sent, and a customer's request that the CA would refuse is refused at once with the limit named."""

import time

import pytest

from acme_client.models import LimitUse
from certificates.models import Certificate, Issuance
from tests.support.acme import wait_for_state

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def request(api, name, names):
    r = api.post("/v2/certificates", {"name": name, "type": "lets_encrypt", "dns_names": names}, format="json")
    assert r.status_code == 201, r.content
    return r.json()["certificate"]["id"]


def test_orders_past_the_budget_wait_with_the_reason_and_are_never_sent(
    api, owner, zones, dns_server, pebble, use_ca, celery_worker, settings
):
    settings.CERTHUB_CA_LIMITS = {"new_orders": (2, 3600)}
    use_ca(pebble)
    ids = [request(api, f"c{i}", [f"c{i}.alpha.test"]) for i in range(3)]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        bodies = [api.get(f"/v2/certificates/{i}").json()["certificate"] for i in ids]
        if sorted(b["state"] for b in bodies) == ["pending", "verified", "verified"] and all(
            b["step"] == "done" or b["last_error"] for b in bodies
        ):
            break
        time.sleep(0.2)
    waiting = next(b for b in bodies if b["state"] == "pending")
    assert waiting["last_error"].startswith("Waiting: the CA's limit of 2 new orders"), waiting["last_error"]
    assert "frees up at" in waiting["last_error"]
    assert sum(Issuance.objects.values_list("orders_created", flat=True)) == 2  # the third was never sent
    assert LimitUse.objects.filter(limit="new_orders").count() == 2
    issuance = Issuance.objects.get(certificate_id=waiting["id"])
    assert issuance.step == Issuance.Step.NEW_ORDER and issuance.attempts == 0  # waiting, not failing


def test_a_request_the_ca_would_refuse_is_refused_at_once_naming_the_limit(
    api, owner, zones, dns_server, pebble, use_ca, celery_worker, settings
):
    settings.CERTHUB_CA_LIMITS = {"certificates_per_exact_set": (1, 7 * 86400), "certificates_per_domain": (2, 86400)}
    use_ca(pebble)
    first = request(api, "one", ["one.alpha.test"])
    assert wait_for_state(api, first)["state"] == "verified"
    renew = api.post(f"/v2/certificates/{first}/actions", {"type": "renew"}, format="json")
    assert renew.status_code == 422, renew.content
    body = renew.json()
    assert body["error_code"] == "ca_rate_limit"
    assert "limit of 1 certificates for the same set of names per 7 days" in body["message"]
    assert wait_for_state(api, request(api, "two", ["two.alpha.test"]))["state"] == "verified"
    third = api.post(
        "/v2/certificates", {"name": "three", "type": "lets_encrypt", "dns_names": ["three.alpha.test"]}, format="json"
    )
    assert third.status_code == 422 and "(alpha.test)" in third.json()["message"], third.content
    assert not Certificate.objects.filter(name="three").exists()
