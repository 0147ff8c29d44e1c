"""The CA forgetting CertHub's account (a reset, any Pebble restart) costs a registration, not every
issuance for good: the next step registers again, once for all workers, and the work goes on."""

import pytest

from acme_client.models import AcmeAccount
from acme_client.pebble import Pebble
from certhub.ports import free_port
from certificates.models import Certificate
from tests.support.acme import DNS_HOST, wait_for_state

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def request(api, name: str, dns_names: list[str]) -> str:
    r = api.post("/v2/certificates", {"name": name, "type": "lets_encrypt", "dns_names": dns_names}, format="json")
    assert r.status_code == 201, r.content
    return r.json()["certificate"]["id"]


def test_a_ca_that_forgot_the_account_gets_it_registered_again(
    api, owner, zones, dns_server, dns_port, use_ca, celery_worker, settings, tmp_path
):
    settings.CERTHUB_RETRY_BASE_DELAY = 0.2
    ports = {"port": free_port(), "management_port": free_port()}
    env = {"PEBBLE_VA_NOSLEEP": "1"}
    pebble = Pebble.start(tmp_path / "ca", (DNS_HOST, dns_port), env=env, **ports)
    try:
        use_ca(pebble)
        first = wait_for_state(api, request(api, "www", ["www.alpha.test"]))
        assert first["state"] == "verified", first["last_error"]
        forgotten = AcmeAccount.objects.get().account_url

        pebble.stop()  # Pebble keeps nothing: restarted, it knows no account, order or certificate
        pebble = Pebble.start(tmp_path / "ca", (DNS_HOST, dns_port), env=env, **ports)
        use_ca(pebble)  # its new root; the account row (and its URL) stays as it was

        renewed = api.post(f"/v2/certificates/{first['id']}/actions", {"type": "renew"}, format="json")
        assert renewed.status_code == 201, renewed.content
        second = wait_for_state(api, request(api, "api", ["api.alpha.test"]))
        assert second["state"] == "verified", second["last_error"]
        body = wait_for_state(api, first["id"])
        assert body["state"] == "verified", body["last_error"]
        assert Certificate.objects.get(pk=first["id"]).versions.count() == 2
        account = AcmeAccount.objects.get()  # one account, registered again once
        assert account.account_url and account.account_url != forgotten
    finally:
        pebble.stop()
