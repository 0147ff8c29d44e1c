"""The team hears when a renewal keeps failing for a day and when expiry is near (7 and 1 days)."""

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.core import mail

from certificates import notifications, renewal
from certificates.models import Certificate
from tests.certificates.test_renewal_sweep import T0, make_certificate

pytestmark = pytest.mark.django_db


def test_expiry_warnings_at_seven_and_one_days_each_sent_once(team, owner):
    certificate = make_certificate(team, "expiring", 90)
    not_after = T0 + timedelta(days=90)
    with time_machine.travel(not_after - timedelta(days=8), tick=False):
        assert notifications.notification_sweep() == 0
    with time_machine.travel(not_after - timedelta(days=7), tick=False):
        assert notifications.notification_sweep() == 1
        assert notifications.notification_sweep() == 0  # not twice
    with time_machine.travel(not_after - timedelta(hours=23), tick=False):
        assert notifications.notification_sweep() == 1
    assert [m.subject for m in mail.outbox] == [
        "Certificate expiring expires in 7 day(s)",
        "Certificate expiring expires in less than one day(s)",
    ]
    assert mail.outbox[0].to == ["owner@example.test"]
    certificate.current_version.refresh_from_db()
    assert certificate.current_version.warned_days == [7, 1]


def test_a_renewal_failing_for_a_day_is_reported_once(team, owner):
    certificate = make_certificate(team, "stuck", 90, not_before=datetime.now(UTC))
    Certificate.objects.filter(pk=certificate.pk).update(last_error="Waiting for the CA to validate: timeout")
    renewal.schedule_after_failure(certificate.pk)
    certificate.refresh_from_db()
    assert certificate.renew_at > datetime.now(UTC)  # tried again later, within the lifetime
    assert notifications.notification_sweep() == 0  # not yet a day
    with time_machine.travel(datetime.now(UTC) + timedelta(days=1, minutes=1), tick=False):
        assert notifications.notification_sweep() == 1
        assert notifications.notification_sweep() == 0
    assert mail.outbox[-1].subject == "Renewal of stuck keeps failing"
    assert "timeout" in mail.outbox[-1].body


def test_a_certificate_that_expired_while_renewals_failed_stops_retrying_and_says_so(
    team, owner, api, django_capture_on_commit_callbacks
):
    certificate = make_certificate(team, "lapsed", 90, not_before=datetime.now(UTC) - timedelta(days=91))
    Certificate.objects.filter(pk=certificate.pk).update(last_error="Waiting for the CA to validate: NXDOMAIN")
    with django_capture_on_commit_callbacks(execute=True):
        renewal.schedule_after_failure(certificate.pk)
    certificate.refresh_from_db()
    # Not every 5 minutes for ever: each retry would cost an order and a failed validation at the CA.
    assert certificate.renew_at is None and certificate.state == Certificate.State.ERROR
    assert certificate.last_error.startswith("Expired because renewals kept failing: Waiting for the CA")
    assert mail.outbox[-1].subject == "Certificate lapsed needs your attention"
    with django_capture_on_commit_callbacks():
        r = api.post(f"/v2/certificates/{certificate.pk}/actions", {"type": "renew"}, format="json")
    assert r.status_code == 201, r.content
    certificate.refresh_from_db()
    assert certificate.issuances.get().reason == "renew_now" and certificate.last_error == ""


def test_a_revoked_certificate_gets_no_expiry_warnings(team, owner):
    certificate = make_certificate(team, "ceased", 90, not_before=datetime.now(UTC) - timedelta(days=85))
    certificate.current_version.revoked_at = datetime.now(UTC)
    certificate.current_version.save(update_fields=["revoked_at"])
    assert notifications.notification_sweep() == 0
    assert mail.outbox == []
