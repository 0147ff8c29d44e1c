"""A step's claim lasts while its worker lives, however long the step takes, and a worker that lost
its claim (stalled past the lease) writes nothing over its successor's work."""

import threading
import time

import pytest
from django.db import connection

from certificates import issuance as workflow
from certificates.models import Certificate, Issuance

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def issuance(team) -> Issuance:
    certificate = Certificate.objects.create(team=team, name="lease", dns_names=["www.alpha.test"])
    return Issuance.objects.create(certificate=certificate, dns_names=certificate.dns_names, key_type="ecdsa-p256")


def run_in_thread(target) -> threading.Thread:
    def run():
        try:
            target()
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_a_step_longer_than_its_lease_is_never_run_twice_at_once(issuance, settings, monkeypatch):
    settings.CERTHUB_STEP_LEASE_SECONDS = 3
    running, release = threading.Event(), threading.Event()
    runs = []

    def slow_publish(issuance, acme):
        runs.append(issuance.pk)
        running.set()
        release.wait(10)
        return workflow._move(issuance, Issuance.Step.CHECK_DNS)

    monkeypatch.setitem(workflow.STEPS, Issuance.Step.NEW_ORDER, slow_publish)
    monkeypatch.setattr(workflow.accounts, "session", lambda directory_url=None: None)
    first = run_in_thread(lambda: workflow.advance(issuance.pk))
    assert running.wait(5)
    # Twice the lease: a lease that were not renewed would have lapsed long ago.
    deadline = time.monotonic() + 2 * settings.CERTHUB_STEP_LEASE_SECONDS
    others = []
    while time.monotonic() < deadline:
        others.append(workflow.advance(issuance.pk))
        time.sleep(0.25)
    release.set()
    first.join(10)
    assert runs == [issuance.pk], "a second worker ran the step while the first one lived"
    assert set(others) == {None} and len(others) > 10
    issuance.refresh_from_db()
    assert issuance.step == Issuance.Step.CHECK_DNS and issuance.claim == ""  # saved, and the claim given back


def test_a_worker_that_lost_its_claim_writes_nothing(issuance, settings, monkeypatch):
    def publish_while_taken_over(issuance, acme):
        # Meanwhile this worker stalled past its lease and another one claimed the issuance.
        Issuance.objects.filter(pk=issuance.pk).update(claim="another-worker")
        issuance.authorizations = [{"url": "https://ca.test/authz/stale"}]
        return workflow._move(issuance, Issuance.Step.PUBLISH)

    monkeypatch.setitem(workflow.STEPS, Issuance.Step.NEW_ORDER, publish_while_taken_over)
    monkeypatch.setattr(workflow.accounts, "session", lambda directory_url=None: None)
    assert workflow.advance(issuance.pk) is None
    issuance.refresh_from_db()
    assert issuance.step == Issuance.Step.NEW_ORDER and issuance.authorizations == []
    assert issuance.claim == "another-worker"
