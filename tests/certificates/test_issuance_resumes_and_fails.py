"""A killed worker's issuance is resumed from its saved order; an unservable challenge fails
clearly after its retries, without a tight loop."""

import time

import pytest
from django.utils import timezone

from certificates import issuance as workflow
from certificates import tasks
from certificates.models import Certificate, Issuance
from certificates.tasks import resume_issuances
from dns_zones import services as zone_services
from dns_zones.models import Record
from tests.certificates.conftest import wait_for_state

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def pending_issuance(api, dns_names, name: str = "resumed") -> Issuance:
    # on_commit runs for real in transactional tests, so the first task itself is held back:
    # the test plays the worker until the "kill".
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tasks.advance_issuance, "apply_async", lambda *args, **kwargs: None)
        r = api.post("/v2/certificates", {"name": name, "type": "lets_encrypt", "dns_names": dns_names}, format="json")
    assert r.status_code == 201, r.content
    return Issuance.objects.get(certificate_id=r.json()["certificate"]["id"])


def run_until(issuance: Issuance, step: str) -> Issuance:
    for _ in range(200):
        issuance.refresh_from_db()
        if issuance.step == step:
            return issuance
        delay = workflow.advance(issuance.pk)
        time.sleep(delay or 0)
    raise AssertionError(f"never reached {step}; at {issuance.step}: {issuance.last_error}")


def die_holding_the_step(issuance: Issuance) -> None:
    """What a worker killed mid-step leaves behind: the step claimed under a lease, nothing saved."""
    claimed = Issuance.objects.filter(pk=issuance.pk, next_attempt_at__lte=timezone.now()).update(
        next_attempt_at=timezone.now() + timezone.timedelta(seconds=1)
    )
    assert claimed == 1
    assert workflow.advance(issuance.pk) is None  # nobody else may run it while the lease holds


def resume_by_sweep(api, issuance: Issuance) -> dict:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        resume_issuances()  # what beat runs every CERTHUB_RESUME_SWEEP_SECONDS
        body = api.get(f"/v2/certificates/{issuance.certificate_id}").json()["certificate"]
        if body["step"] in ("done", "failed"):
            return body
        time.sleep(0.2)
    raise AssertionError("the sweep did not finish the issuance")


def test_the_challenge_is_checked_once_our_dns_has_had_time_to_serve_it(
    api, owner, zones, dns_server, pebble, use_ca, settings
):
    use_ca(pebble)
    # What the worker expects of our DNS without NOTIFY; long, so "not due yet" holds however slow
    # this machine is.
    settings.CERTHUB_DNS_RELOAD_INTERVAL = 30
    settings.CERTHUB_DNS_NOTIFY = []
    issuance = run_until(pending_issuance(api, ["www.alpha.test"], name="timely"), Issuance.Step.PUBLISH)

    before_the_step = timezone.now()
    delay = workflow.advance(issuance.pk)
    issuance.refresh_from_db()

    assert issuance.step == Issuance.Step.CHECK_DNS
    assert delay == 30
    # Due one propagation delay after the step was claimed.
    due_in = (issuance.next_attempt_at - before_the_step).total_seconds()
    assert 30 <= due_in < 31
    assert workflow.advance(issuance.pk) is None  # not due: no early check, no task spent
    issuance.refresh_from_db()
    assert (issuance.step, issuance.polls) == (Issuance.Step.CHECK_DNS, 0)


def test_names_the_ca_remembers_publish_nothing_and_are_checked_at_once(
    api, owner, zones, dns_server, pebble_authz_reuse, use_ca, settings
):
    use_ca(pebble_authz_reuse)
    first = pending_issuance(api, ["www.alpha.test", "api.alpha.test"], name="first")
    assert run_until(first, Issuance.Step.DONE).orders_created == 1
    settings.CERTHUB_DNS_RELOAD_INTERVAL = 30  # a check that waited would show as this delay
    settings.CERTHUB_DNS_NOTIFY = []

    # The same account asks again for a name validated a moment ago: its authorization is valid.
    again = run_until(pending_issuance(api, ["www.alpha.test"], name="again"), Issuance.Step.PUBLISH)
    records_before = set(Record.objects.filter(type="TXT").values_list("name", "data"))
    assert workflow.advance(again.pk) == 0.0
    again.refresh_from_db()
    assert again.step == Issuance.Step.CHECK_DNS
    assert [authz["status"] for authz in again.authorizations] == ["valid"]
    assert set(Record.objects.filter(type="TXT").values_list("name", "data")) == records_before

    run_until(again, Issuance.Step.DONE)
    assert Certificate.objects.get(pk=again.certificate_id).state == Certificate.State.VERIFIED


def test_a_download_repeated_after_its_commit_emails_once(api, owner, zones, dns_server, pebble, use_ca, mailoutbox):
    use_ca(pebble)
    issuance = run_until(pending_issuance(api, ["mail.alpha.test"], name="mailed"), Issuance.Step.DOWNLOAD)
    # The worker stored the version and committed, then died before saving the step.
    workflow.step_download(issuance, workflow.accounts.session())
    assert len(mailoutbox) == 1

    issuance = run_until(Issuance.objects.get(pk=issuance.pk), Issuance.Step.DONE)  # download runs again

    assert Certificate.objects.get(pk=issuance.certificate_id).versions.count() == 1
    assert len(mailoutbox) == 1


@pytest.mark.parametrize("killed_at", [Issuance.Step.PUBLISH, Issuance.Step.POLL_ORDER])
def test_killed_worker_is_resumed_with_exactly_one_order(
    api, owner, zones, dns_server, pebble, use_ca, celery_worker, settings, killed_at
):
    settings.CERTHUB_STEP_LEASE_SECONDS = 1
    use_ca(pebble)
    issuance = pending_issuance(api, ["www.alpha.test", "*.beta.test"])
    if killed_at == Issuance.Step.POLL_ORDER:
        # Killed right after sending finalize, before saving: the CA has the CSR, we do not know it.
        issuance = run_until(issuance, Issuance.Step.FINALIZE)
        workflow.step_finalize(issuance, workflow.accounts.session())
        issuance.refresh_from_db()
        assert issuance.step == Issuance.Step.FINALIZE and issuance.private_key_pem
    else:
        # Killed after the order was created and saved.
        issuance = run_until(issuance, killed_at)
    order_url = issuance.order_url
    assert order_url and issuance.orders_created == 1
    die_holding_the_step(issuance)

    body = resume_by_sweep(api, issuance)
    assert body["state"] == "verified", body["last_error"]
    issuance.refresh_from_db()
    assert issuance.orders_created == 1 and issuance.order_url == order_url
    assert Certificate.objects.get(pk=issuance.certificate_id).versions.count() == 1


def test_unservable_challenge_fails_with_a_clear_reason_after_retries(
    api, owner, team, dns_server, pebble, use_ca, celery_worker, settings
):
    settings.CERTHUB_RETRY_BUDGET_SECONDS = 4
    settings.CERTHUB_RETRY_BASE_DELAY = 0.5
    settings.CERTHUB_DNS_CHECK_MAX_POLLS = 4
    use_ca(pebble)
    zone = zone_services.zone_create(team=team, name="broken.test")
    # The challenge name is delegated to a server that does not exist: our server can only refer.
    zone_services.record_create(
        zone=zone, data={"type": "NS", "name": "_acme-challenge", "data": "ns.nowhere.invalid."}
    )
    r = api.post(
        "/v2/certificates", {"name": "broken", "type": "lets_encrypt", "dns_names": ["broken.test"]}, format="json"
    )
    started = time.monotonic()
    body = wait_for_state(api, r.json()["certificate"]["id"], timeout=30)
    elapsed = time.monotonic() - started

    assert body["state"] == "error"
    assert "_acme-challenge.broken.test" in body["last_error"]
    assert "gave up after retrying" in body["last_error"]
    issuance = Issuance.objects.get(certificate_id=body["id"])
    assert issuance.step == Issuance.Step.FAILED and issuance.orders_created == 1
    # Retries happened, with growing delays: a few attempts spread over the budget, not hundreds.
    assert 2 <= issuance.attempts + 1 <= 6, issuance.attempts
    assert 1 <= elapsed < 20  # the retry delays (0.5 s, 1 s, ...) were waited out
    assert not zone.records.filter(type="TXT").exists()  # its challenge records were removed


def test_a_permanent_problem_fails_at_once_without_retries(api, owner, team, dns_server, pebble, use_ca):
    use_ca(pebble)
    zone = zone_services.zone_create(team=team, name="vanishing.test")
    issuance = pending_issuance(api, ["vanishing.test"], name="v")
    run_until(issuance, Issuance.Step.PUBLISH)
    zone.delete()  # the customer deletes the zone while the order is open

    assert workflow.advance(issuance.pk) is None  # nothing more to schedule
    issuance.refresh_from_db()
    assert issuance.step == Issuance.Step.FAILED and issuance.attempts == 0
    body = api.get(f"/v2/certificates/{issuance.certificate_id}").json()["certificate"]
    assert body["state"] == "error"
    assert body["last_error"] == (
        "Publishing DNS challenge records: no DNS zone of your team holds _acme-challenge.vanishing.test; "
        "add the zone back and request the certificate again"
    )
