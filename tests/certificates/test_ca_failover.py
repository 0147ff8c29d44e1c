"""Renewals go to the second CA when the first has been down too long and lifetimes run short, and
come back to the first once it answers again. Two real Pebbles; the first is stopped."""

import pytest

from acme_client import accounts
from acme_client.models import AcmeAccount
from acme_client.pebble import Pebble
from certhub.ports import free_port
from certificates.models import Certificate
from tests.support.acme import DNS_HOST, wait_for_state

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def ca_settings(pebble: Pebble) -> dict[str, str]:
    return {"directory_url": pebble.directory_url, "ca_bundle": pebble.ca_bundle, "eab_kid": "", "eab_hmac_key": ""}


@pytest.fixture
def two_cas(dns_port, use_ca, settings, tmp_path):
    """Two Pebbles, CertHub pointed at the first with the second as its fallback; quick retries."""
    env = {"PEBBLE_VA_NOSLEEP": "1"}
    cas = {"env": env, "first_ports": {"port": free_port(), "management_port": free_port()}}
    cas["first"] = Pebble.start(tmp_path / "first", (DNS_HOST, dns_port), env=env, **cas["first_ports"])
    cas["second"] = Pebble.start(tmp_path / "second", (DNS_HOST, dns_port), env=env)
    use_ca(cas["first"])
    settings.ACME_CAS = [ca_settings(cas["first"]), ca_settings(cas["second"])]
    settings.CERTHUB_RETRY_BASE_DELAY = 0.2
    yield cas
    cas["first"].stop()
    cas["second"].stop()


def issue(api, name: str) -> str:
    r = api.post(
        "/v2/certificates", {"name": name, "type": "lets_encrypt", "dns_names": [f"{name}.alpha.test"]}, format="json"
    )
    certificate_id = r.json()["certificate"]["id"]
    assert wait_for_state(api, certificate_id)["state"] == "verified"
    return certificate_id


def renew(api, certificate_id: str) -> dict:
    r = api.post(f"/v2/certificates/{certificate_id}/actions", {"type": "renew"}, format="json")
    assert r.status_code == 201, r.content
    return wait_for_state(api, certificate_id, timeout=60)


def test_renewals_fail_over_to_the_second_ca_and_come_back(
    api, owner, zones, dns_server, dns_port, celery_worker, settings, tmp_path, two_cas
):
    first, second = two_cas["first"], two_cas["second"]
    settings.CERTHUB_CA_FAILOVER_AFTER_SECONDS = 2
    settings.CERTHUB_CA_FAILOVER_LIFETIME_LEFT = 1.0  # any lifetime left is "short" here
    certificate_id = issue(api, "fo")

    first.stop()
    body = renew(api, certificate_id)
    assert body["state"] == "verified", body["last_error"]
    versions = list(Certificate.objects.get(pk=certificate_id).versions.order_by("not_before", "pk"))
    assert [v.directory_url for v in versions] == [first.directory_url, second.directory_url]
    assert AcmeAccount.objects.get(directory_url=first.directory_url).unreachable_since is not None

    first = two_cas["first"] = Pebble.start(
        tmp_path / "first", (DNS_HOST, dns_port), env=two_cas["env"], **two_cas["first_ports"]
    )
    accounts.forget_sessions()
    body = renew(api, certificate_id)
    assert body["state"] == "verified", body["last_error"]
    latest = Certificate.objects.get(pk=certificate_id).versions.order_by("-pk").first()
    assert latest.directory_url == first.directory_url  # back at the first, once it answers
    assert AcmeAccount.objects.get(directory_url=first.directory_url).unreachable_since is None


def test_a_renewal_waits_for_its_ca_while_lifetime_is_left(
    api, owner, zones, dns_server, celery_worker, settings, two_cas
):
    settings.CERTHUB_RETRY_BUDGET_SECONDS = 4
    settings.CERTHUB_CA_FAILOVER_AFTER_SECONDS = 1
    certificate_id = issue(api, "w")
    two_cas["first"].stop()
    body = renew(api, certificate_id)  # gives up after its budget; a fresh 90-day certificate is not short
    assert body["state"] == "verified" and "cannot reach the CA" in body["last_error"]
    assert Certificate.objects.get(pk=certificate_id).versions.count() == 1
