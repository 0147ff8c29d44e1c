"""The renewal sweep picks exactly the due certificates, once, whatever their lifetime."""

import threading
from datetime import UTC, datetime, timedelta
from itertools import pairwise

import pytest
import time_machine
from django.db import connection

from certhub.celery import app as celery_app
from certificates import renewal
from certificates.models import Certificate, CertificateVersion, Issuance

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def make_certificate(team, name: str, lifetime_days: int, *, not_before: datetime = T0) -> Certificate:
    certificate = Certificate.objects.create(team=team, name=name, dns_names=[f"{name}.test"], names_key=f"{name}.test",
                                             state=Certificate.State.VERIFIED)  # fmt: skip
    not_after = not_before + timedelta(days=lifetime_days)
    version = CertificateVersion(
        certificate=certificate, serial=name, not_before=not_before, not_after=not_after, key_type="ecdsa-p256",
        sha1_fingerprint="0" * 40, sha256_fingerprint="0" * 64, leaf_pem="-", private_key_pem="k",
    )  # fmt: skip
    renewal.schedule_after_success(certificate, version, None)
    version.save()
    certificate.current_version = version
    certificate.save()
    return certificate


@pytest.fixture(autouse=True)
def _no_stray_tasks():
    yield
    celery_app.control.purge()


@pytest.mark.django_db
@pytest.mark.parametrize(("lifetime", "due_after"), [(90, 30), (64, 64 / 3), (45, 15), (6, 2)])
def test_due_exactly_when_a_third_of_the_lifetime_has_elapsed(
    team, lifetime, due_after, django_capture_on_commit_callbacks
):
    certificate = make_certificate(team, f"life{lifetime}", lifetime)
    due_at = T0 + timedelta(days=due_after)
    assert certificate.renew_at == due_at
    with time_machine.travel(due_at - timedelta(seconds=1), tick=False):
        assert renewal.renewal_sweep() == 0
    with time_machine.travel(due_at, tick=False), django_capture_on_commit_callbacks():
        assert renewal.renewal_sweep() == 1
    issuance = Issuance.objects.get(certificate=certificate)
    assert issuance.reason == "renew" and issuance.dns_names == certificate.dns_names
    certificate.refresh_from_db()
    assert certificate.renew_at is None  # claimed: a second sweep will not pick it
    with time_machine.travel(due_at + timedelta(hours=4), tick=False):
        assert renewal.renewal_sweep() == 0


@pytest.mark.django_db
def test_sweep_selects_exactly_the_due_mix_and_staggers_them(team, settings, django_capture_on_commit_callbacks):
    settings.CERTHUB_RENEWAL_BATCH = 2  # several keyset pages
    settings.CERTHUB_RENEWAL_SPACING = 0.5
    lifetimes = {"a": 90, "b": 64, "c": 45, "d": 6, "e": 90, "f": 6}
    starts = {"a": T0 - timedelta(days=31), "b": T0 - timedelta(days=10), "c": T0 - timedelta(days=15),
              "d": T0 - timedelta(days=1), "e": T0, "f": T0 - timedelta(days=3)}  # fmt: skip
    for name, days in lifetimes.items():
        make_certificate(team, name, days, not_before=starts[name])
    with time_machine.travel(T0, tick=False), django_capture_on_commit_callbacks():
        assert renewal.renewal_sweep() == 3
    renewed = Issuance.objects.order_by("next_attempt_at")
    assert sorted(i.certificate.name for i in renewed) == ["a", "c", "f"]
    gaps = [(b.next_attempt_at - a.next_attempt_at).total_seconds() for a, b in pairwise(renewed)]
    assert gaps == [0.5, 0.5]


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(connection.vendor != "mysql", reason="needs concurrent writers")
def test_two_sweeps_at_the_same_time_queue_each_due_certificate_once(team):
    for i in range(40):
        make_certificate(team, f"c{i}", 90, not_before=T0 - timedelta(days=60))
    barrier = threading.Barrier(2)
    counts = []

    def sweep():
        from django.db import connections

        barrier.wait()
        counts.append(renewal.renewal_sweep())
        connections.close_all()

    threads = [threading.Thread(target=sweep) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(counts) == 40
    assert Issuance.objects.count() == 40
    assert Issuance.objects.values("certificate").distinct().count() == 40


@pytest.mark.django_db
def test_renew_now_action_and_key_type_change(api, team, django_capture_on_commit_callbacks):
    certificate = make_certificate(team, "manual", 90, not_before=datetime.now(UTC))
    r = api.patch(f"/v2/certificates/{certificate.pk}", {"key_type": "rsa-3072"}, format="json")
    assert r.status_code == 200 and r.json()["certificate"]["key_type"] == "rsa-3072"
    assert api.patch(f"/v2/certificates/{certificate.pk}", {"key_type": "rsa-1024"}, format="json").status_code == 422
    assert api.patch(f"/v2/certificates/{certificate.pk}", {"name": "x"}, format="json").status_code == 422
    with django_capture_on_commit_callbacks():
        r = api.post(f"/v2/certificates/{certificate.pk}/actions", {"type": "renew"}, format="json")
    assert r.status_code == 201 and r.json()["action"]["type"] == "renew"
    issuance = Issuance.objects.get(certificate=certificate)
    assert issuance.key_type == "rsa-3072" and issuance.reason == "renew_now"
    r = api.post(f"/v2/certificates/{certificate.pk}/actions", {"type": "renew"}, format="json")
    assert r.status_code == 422 and "already under way" in r.json()["message"]
    assert api.post(f"/v2/certificates/{certificate.pk}/actions", {"type": "explode"}, format="json").status_code == 422


@pytest.mark.django_db
def test_migrate_key_type_marks_rsa_certificates_of_one_team(team, other_team):
    from django.core.management import call_command

    mine = make_certificate(team, "rsa-mine", 90)
    theirs = make_certificate(other_team, "rsa-theirs", 90)
    Certificate.objects.filter(pk__in=[mine.pk, theirs.pk]).update(key_type="rsa-2048")
    call_command("migrate_key_type", "--from", "rsa", "--to", "ecdsa-p256", "--team", "acme")
    mine.refresh_from_db()
    theirs.refresh_from_db()
    assert (mine.key_type, theirs.key_type) == ("ecdsa-p256", "rsa-2048")
