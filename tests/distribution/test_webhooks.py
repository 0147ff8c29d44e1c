"""Customers' webhooks: every certificate event reaches the team's endpoint, signed per Standard
Webhooks, retried until it is accepted, and never carrying a private key."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from standardwebhooks.webhooks import Webhook as Verifier

from distribution.models import WebhookDelivery
from tests.support.pki import make_ca, make_leaf

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


class Receiver:
    """A customer's endpoint: refuses the first `fail_first` requests with 500, then accepts."""

    def __init__(self, fail_first: int = 0) -> None:
        self.received: list[tuple[dict, bytes]] = []
        self.fail_first = fail_first
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                code = 500 if len(receiver.received) <= receiver.fail_first else 200
                answer = b"try later" if code == 500 else b"thanks"
                self.send_response(code)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks/certhub"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver(settings):
    settings.CERTHUB_ALLOW_PRIVATE_TARGETS = True
    settings.CERTHUB_DELIVERY_RETRY_BASE_DELAY = 0.2
    server = Receiver(fail_first=1)
    yield server
    server.stop()


def upload_custom(api, settings, tmp_path) -> tuple[dict, str]:
    root = make_ca("Webhook Test Root")
    bundle = tmp_path / "roots.pem"
    bundle.write_text(root.pem)
    settings.CERTHUB_CUSTOM_TRUST_BUNDLE = str(bundle)
    leaf = make_leaf(root, ["hooks.example.test"])
    body = {"name": "hooks", "type": "custom", "private_key": leaf.key_pem, "leaf_certificate": leaf.pem}
    r = api.post("/v2/certificates", body, format="json")
    assert r.status_code == 201, r.content
    return r.json()["certificate"], leaf.key_pem


def wait_for(predicate, timeout: float = 20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.05)
    raise AssertionError("timed out")


def test_a_new_version_is_posted_signed_and_retried_until_accepted(api, receiver, settings, tmp_path, celery_worker):
    r = api.post("/v2/webhooks", {"url": receiver.url}, format="json")
    assert r.status_code == 201, r.content
    webhook = r.json()["webhook"]
    secret = webhook["secret"]
    assert secret.startswith("whsec_")
    assert "secret" not in api.get(f"/v2/webhooks/{webhook['id']}").json()["webhook"]

    certificate, key_pem = upload_custom(api, settings, tmp_path)
    delivered = wait_for(lambda: WebhookDelivery.objects.filter(status="delivered").first())
    assert delivered.attempts == 2 and delivered.response_status == 200 and delivered.response_body == "thanks"

    assert len(receiver.received) == 2  # the refused one and the retry, with the same id
    headers, body = receiver.received[-1]
    assert headers["webhook-id"] == receiver.received[0][0]["webhook-id"] == f"msg_{delivered.event_id}"
    # The receiver's check, with the secret it was given: a wrong secret or a changed body fails it.
    payload = Verifier(secret).verify(body.decode(), headers)
    assert payload["type"] == "certificate.version_created"
    assert payload["data"]["certificate_id"] == certificate["id"]
    assert payload["data"]["certificate_url"].endswith(f"/v2/certificates/{certificate['id']}")
    assert payload["data"]["version"]["serial"]
    with pytest.raises(Exception, match="signature"):
        Verifier("whsec_" + "A" * 32).verify(body.decode(), headers)
    assert "PRIVATE KEY" not in body.decode() and key_pem.splitlines()[1] not in body.decode()

    deliveries = api.get(f"/v2/webhooks/{webhook['id']}/deliveries").json()["deliveries"]
    assert [d["status"] for d in deliveries] == ["delivered"] and deliveries[0]["attempts"] == 2


def test_webhook_urls_are_validated_and_other_teams_cannot_see_them(api, outsider_api, settings):
    settings.CERTHUB_ALLOW_PRIVATE_TARGETS = True
    for bad in ("ftp://example.test/x", "not a url", "", "http://user:pw@example.test/"):
        r = api.post("/v2/webhooks", {"url": bad}, format="json")
        assert r.status_code == 422 and "url" in r.json()["errors"], bad
    webhook = api.post("/v2/webhooks", {"url": "https://hooks.example.test/x"}, format="json").json()["webhook"]
    assert outsider_api.get(f"/v2/webhooks/{webhook['id']}").status_code == 404
    assert outsider_api.get(f"/v2/webhooks/{webhook['id']}/deliveries").status_code == 404
    assert outsider_api.delete(f"/v2/webhooks/{webhook['id']}").status_code == 404
    assert outsider_api.get("/v2/webhooks").json()["webhooks"] == []
    assert api.delete(f"/v2/webhooks/{webhook['id']}").status_code == 204


def test_a_webhook_to_a_private_address_is_refused_at_delivery(api, settings, tmp_path, celery_worker):
    settings.CERTHUB_ALLOW_PRIVATE_TARGETS = False
    api.post("/v2/webhooks", {"url": "http://127.0.0.1:9/hook"}, format="json")
    upload_custom(api, settings, tmp_path)
    delivery = wait_for(lambda: WebhookDelivery.objects.filter(attempts__gte=1).first())
    assert "not a public address" in delivery.last_error and delivery.response_status is None
    assert json.dumps(delivery.payload).count("PRIVATE KEY") == 0
