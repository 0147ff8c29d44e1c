"""What a customer reads when an issuance fails: the step that failed, and no internal CA address."""

import pytest

from acme_client.protocol import AcmeError, AcmeSession
from certificates import issuance as workflow
from certificates.models import Certificate, Issuance
from tests.support.acme import wait_for_state

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def request(api, name: str) -> str:
    body = {"name": name, "type": "lets_encrypt", "dns_names": [f"{name}.alpha.test"]}
    r = api.post("/v2/certificates", body, format="json")
    assert r.status_code == 201, r.content
    return r.json()["certificate"]["id"]


def test_a_ca_error_quotes_no_ca_url_to_the_customer(
    api, owner, zones, dns_server, pebble, use_ca, celery_worker, monkeypatch
):
    use_ca(pebble)

    def refused(issuance, acme):
        raise AcmeError("Order https://10.1.2.3:14000/order/abc refused by https://ca.internal/x", permanent=True)

    monkeypatch.setitem(workflow.STEPS, Issuance.Step.NEW_ORDER, refused)
    body = wait_for_state(api, request(api, "www"), timeout=20)
    assert body["state"] == "error"
    assert body["last_error"] == "Creating the order: Order (a CA resource) refused by (a CA resource)"


def test_an_error_while_answering_is_labelled_as_the_answer_not_the_dns_check(
    api, owner, zones, dns_server, pebble, use_ca, celery_worker, monkeypatch
):
    use_ca(pebble)

    def answer_refused(self, url):
        raise AcmeError("the CA refused the challenge answer", permanent=True)

    monkeypatch.setattr(AcmeSession, "answer_challenge", answer_refused)
    certificate_id = request(api, "api")
    body = wait_for_state(api, certificate_id, timeout=20)
    assert body["state"] == "error"
    assert body["last_error"].startswith("Asking the CA to validate: the CA refused the challenge answer")
    assert Certificate.objects.get(pk=certificate_id).issuances.get().step == Issuance.Step.FAILED
