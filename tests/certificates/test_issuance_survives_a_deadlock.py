"""A step that loses a database deadlock runs again at once, instead of waiting out its lease."""

import pytest
from django.db import OperationalError

from certificates import issuance as workflow
from certificates.models import Issuance
from tests.support.acme import wait_for_state

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_a_deadlocked_step_is_retried_and_the_certificate_is_issued(
    api, owner, zones, dns_server, pebble, use_ca, celery_worker, settings, monkeypatch
):
    settings.CERTHUB_STEP_LEASE_SECONDS = 120  # waiting out the lease would exceed the test's wait
    use_ca(pebble)
    real_finalize = workflow.STEPS[Issuance.Step.FINALIZE]
    deadlocks = []

    def finalize_once_deadlocked(issuance, acme):
        if not deadlocks:
            deadlocks.append(issuance.pk)
            raise OperationalError(1213, "Deadlock found when trying to get lock; try restarting transaction")
        return real_finalize(issuance, acme)

    monkeypatch.setitem(workflow.STEPS, Issuance.Step.FINALIZE, finalize_once_deadlocked)
    r = api.post(
        "/v2/certificates", {"name": "www", "type": "lets_encrypt", "dns_names": ["www.alpha.test"]}, format="json"
    )
    assert r.status_code == 201, r.content
    body = wait_for_state(api, r.json()["certificate"]["id"], timeout=30)
    assert body["state"] == "verified", body["last_error"]
    assert len(deadlocks) == 1
    issuance = Issuance.objects.get(pk=deadlocks[0])
    assert issuance.orders_created == 1 and issuance.attempts == 0  # a retry of the step, not a failure
