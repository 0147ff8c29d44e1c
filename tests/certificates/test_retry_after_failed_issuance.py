"""A certificate whose first issuance failed can be tried again with the renew action."""

import pytest

from certificates.models import Certificate, Issuance
from dns_zones import services as zone_services

pytestmark = pytest.mark.django_db


def failed_first_issuance(team) -> Certificate:
    zone_services.zone_create(team=team, name="retry.test")
    certificate = Certificate.objects.create(
        team=team, name="www", dns_names=["www.retry.test"], names_key="www.retry.test",
        state=Certificate.State.ERROR, last_error="the CA refused the order",
    )  # fmt: skip
    Issuance.objects.create(
        certificate=certificate, dns_names=certificate.dns_names, key_type=certificate.key_type,
        step=Issuance.Step.FAILED, last_error="the CA refused the order",
    )  # fmt: skip
    return certificate


def test_renew_after_a_failed_first_issuance_starts_it_again(api, team, monkeypatch):
    monkeypatch.setattr("certificates.tasks.advance_issuance.apply_async", lambda *a, **k: None)
    certificate = failed_first_issuance(team)
    r = api.post(f"/v2/certificates/{certificate.pk}/actions", {"type": "renew"}, format="json")
    assert r.status_code == 201, r.content
    certificate.refresh_from_db()
    assert (certificate.state, certificate.last_error) == ("pending", "")
    assert certificate.issuances.exclude(step=Issuance.Step.FAILED).count() == 1

    again = api.post(f"/v2/certificates/{certificate.pk}/actions", {"type": "renew"}, format="json")
    assert again.status_code == 422 and "already under way" in again.json()["message"]
    assert certificate.issuances.count() == 2
