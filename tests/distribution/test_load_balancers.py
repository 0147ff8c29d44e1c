"""Load balancers end to end: the DigitalOcean-shaped API, a real HAProxy node, Pebble certificates,
and a TLS client at the load balancer's own address and entry port."""

import http.client
import ssl
import threading
import time

import pytest
from cryptography import x509

from certhub import outbox
from certificates.models import Certificate
from distribution import delivery
from distribution.models import Deployment, LoadBalancer
from tests.support.acme import wait_for_state
from tests.support.nodes import Backend, haproxy_node

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]
POOL = "127.0.84.0/24"
PORT = 8443


@pytest.fixture
def lb_setup(settings, api, owner, zones, dns_server, pebble, use_ca, celery_worker):
    settings.CERTHUB_LB_ADDRESS_POOL = POOL
    settings.CERTHUB_DELIVERY_RETRY_BASE_DELAY = 0.2
    settings.CERTHUB_DELIVERY_RETRY_MAX_DELAY = 1.0
    use_ca(pebble)
    backend = Backend()
    with haproxy_node() as (process, node):
        yield process, node, backend
    backend.stop()


def issue(api, name: str, dns_names: list[str]) -> dict:
    r = api.post("/v2/certificates", {"name": name, "type": "lets_encrypt", "dns_names": dns_names}, format="json")
    assert r.status_code == 201, r.content
    body = wait_for_state(api, r.json()["certificate"]["id"])
    assert body["state"] == "verified", body["last_error"]
    return body


def lb_body(certificate_id: str, backend: Backend, **extra) -> dict:
    # python-digitalocean's create body, with our target_addresses added.
    return {
        "name": "web-lb", "region": "nyc3", "size": None, "vpc_uuid": None, "droplet_ids": [],
        "forwarding_rules": [
            {"entry_protocol": "https", "entry_port": PORT, "target_protocol": "http", "target_port": backend.port,
             "certificate_id": certificate_id, "tls_passthrough": False},
            {"entry_protocol": "http", "entry_port": 8080, "target_protocol": "http", "target_port": backend.port,
             "certificate_id": "", "tls_passthrough": False},
        ],
        "redirect_http_to_https": False,
        "sticky_sessions": {"type": "none", "cookie_name": "", "cookie_ttl_seconds": None},
        "target_addresses": [backend.host],
        **extra,
    }  # fmt: skip


def served(ip: str, port: int, sni: str, root_pem: str | None = None) -> x509.Certificate:
    context = ssl.create_default_context(cadata=root_pem) if root_pem else ssl._create_unverified_context()
    with context.wrap_socket(__import__("socket").create_connection((ip, port), timeout=3), server_hostname=sni) as s:
        return x509.load_der_x509_certificate(s.getpeercert(binary_form=True))


def wait_for(predicate, timeout: float = 20, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def verified(certificate_id: str, lb_id: str) -> Deployment | None:
    certificate = Certificate.objects.get(pk=certificate_id)
    return Deployment.objects.filter(
        target_id=lb_id, version_id=certificate.current_version_id, status=Deployment.Status.VERIFIED
    ).first()


def test_a_load_balancer_serves_its_certificate_and_each_renewal_without_a_reload(api, lb_setup, pebble):
    process, _, backend = lb_setup
    certificate = issue(api, "www", ["www.alpha.test"])

    r = api.post("/v2/load_balancers", lb_body(certificate["id"], backend), format="json")
    assert r.status_code == 202, r.content
    lb = r.json()["load_balancer"]
    assert lb["status"] == "new" and lb["ip"].startswith("127.0.84.")
    rules = {rule["entry_port"]: rule for rule in lb["forwarding_rules"]}
    assert rules[PORT] == {
        "entry_protocol": "https", "entry_port": PORT, "target_protocol": "http", "target_port": backend.port,
        "certificate_id": certificate["id"], "tls_passthrough": False,
    }  # fmt: skip
    assert lb["region"]["slug"] == "nyc3" and lb["health_check"]["protocol"] == "http"

    first = wait_for(lambda: verified(certificate["id"], lb["id"]), what="first deployment verified")
    assert first.served_serial == Certificate.objects.get(pk=certificate["id"]).current_version.serial
    assert first.verified_at and first.duration_ms is not None
    assert api.get(f"/v2/load_balancers/{lb['id']}").json()["load_balancer"]["status"] == "active"
    # A client trusting only the CA's root verifies the chain and the name at ip:entry_port.
    leaf = served(lb["ip"], PORT, "www.alpha.test", pebble.root_pem())
    assert format(leaf.serial_number, "x") == first.served_serial
    conn = http.client.HTTPSConnection(lb["ip"], PORT, context=ssl.create_default_context(cadata=pebble.root_pem()))
    conn._context.check_hostname = False  # connected by address, without SNI: still served its certificate
    conn.request("GET", "/", headers={"Host": "www.alpha.test"})
    assert conn.getresponse().read() == b"backend ok"
    plain = http.client.HTTPConnection(lb["ip"], 8080, timeout=3)
    plain.request("GET", "/")
    assert plain.getresponse().read() == b"backend ok"

    # Renew while a client keeps connections alive and sends requests: none fails, no reload.
    reloads = process.process_table().reloads
    failures, requests, stop = [], [0], threading.Event()

    def keep_sending() -> None:
        context = ssl.create_default_context(cadata=pebble.root_pem())
        context.check_hostname = False  # by address; the chain is still verified
        conns = [http.client.HTTPSConnection(lb["ip"], PORT, context=context, timeout=5) for _ in range(3)]
        while not stop.is_set():
            for c in conns:
                try:
                    c.request("GET", "/", headers={"Host": "www.alpha.test"})
                    assert c.getresponse().read() == b"backend ok"
                    requests[0] += 1
                except Exception as e:  # any failure counts
                    failures.append(repr(e))
                    c.close()

    sender = threading.Thread(target=keep_sending)
    sender.start()
    try:
        wait_for(lambda: requests[0] >= 10, what="requests flowing before the renewal")
        r = api.post(f"/v2/certificates/{certificate['id']}/actions", {"type": "renew"}, format="json")
        assert r.status_code == 201, r.content
        old_version = first.version_id
        renewed = wait_for(
            lambda: Certificate.objects.get(pk=certificate["id"]).current_version_id != old_version, what="renewal"
        )
        assert renewed
        second = wait_for(lambda: verified(certificate["id"], lb["id"]), what="renewal verified on the node")
        after_swap = requests[0] + 10
        wait_for(lambda: requests[0] >= after_swap, what="requests on the same connections after the swap")
    finally:
        stop.set()
        sender.join(10)
    assert second.served_serial != first.served_serial
    assert (
        format(served(lb["ip"], PORT, "www.alpha.test", pebble.root_pem()).serial_number, "x") == second.served_serial
    )
    assert failures == [] and requests[0] >= 20
    assert process.process_table().reloads == reloads  # the Runtime API swapped it in place

    # A redelivered event and an older version plan nothing.
    count = Deployment.objects.count()
    version_event = outbox.OutboxEvent.objects.filter(kind="certificate.version_created").last()
    from distribution.events import handle

    handle([version_event])
    assert delivery.plan_versions(version_ids=[old_version]) == 0
    assert Deployment.objects.count() == count

    # Deleting the certificate in use is refused, naming the load balancer.
    r = api.delete(f"/v2/certificates/{certificate['id']}")
    assert r.status_code == 403 and "web-lb" in r.json()["message"] and lb["id"] in r.json()["message"]
    assert Certificate.objects.filter(pk=certificate["id"]).exists()


def test_a_node_that_is_down_gets_the_version_when_it_returns(api, lb_setup, settings):
    process, _, backend = lb_setup
    certificate = issue(api, "api", ["api.alpha.test"])
    lb = api.post("/v2/load_balancers", lb_body(certificate["id"], backend), format="json").json()["load_balancer"]
    wait_for(lambda: verified(certificate["id"], lb["id"]), what="first deployment")

    workdir = process.workdir
    process.stop()
    api.post(f"/v2/certificates/{certificate['id']}/actions", {"type": "renew"}, format="json")

    def failing():
        current = Certificate.objects.get(pk=certificate["id"]).current_version_id
        return Deployment.objects.filter(version_id=current, attempts__gte=1, status="pending").first()

    pending = wait_for(failing, what="a failed attempt while the node is down")
    assert "does not answer" in pending.last_error or "probe failed" in pending.last_error

    from distribution.nodes.haproxy import HAProxyNode

    restarted = HAProxyNode.start(workdir)
    try:
        done = wait_for(lambda: verified(certificate["id"], lb["id"]), timeout=30, what="delivery after restart")
        assert done.attempts >= 2 and done.last_error == ""
    finally:
        restarted.stop()


def test_another_team_cannot_see_or_use_a_load_balancer(api, outsider_api, lb_setup):
    _, _, backend = lb_setup
    certificate = issue(api, "www", ["www.alpha.test"])
    lb = api.post("/v2/load_balancers", lb_body(certificate["id"], backend), format="json").json()["load_balancer"]
    path = f"/v2/load_balancers/{lb['id']}"
    assert outsider_api.get(path).status_code == 404
    assert outsider_api.put(path, lb_body("", backend), format="json").status_code == 404
    assert outsider_api.delete(path).status_code == 404
    assert outsider_api.post(f"{path}/forwarding_rules", {"forwarding_rules": []}, format="json").status_code == 404
    assert outsider_api.get("/v2/load_balancers").json()["load_balancers"] == []
    # acme's certificate is as unknown to globex as a missing one.
    r = outsider_api.post("/v2/load_balancers", lb_body(certificate["id"], backend, name="steal"), format="json")
    assert r.status_code == 422 and "forwarding_rules[0].certificate_id" in r.json()["errors"]
    assert LoadBalancer.objects.count() == 1


def test_bad_requests_get_a_422_naming_the_field(api, lb_setup):
    _, _, backend = lb_setup
    body = lb_body("", backend)
    r = api.post("/v2/load_balancers", body, format="json")
    assert r.status_code == 422 and "forwarding_rules[0].certificate_id" in r.json()["errors"]
    body["forwarding_rules"] = [{**body["forwarding_rules"][1], "entry_port": 70000}]
    r = api.post("/v2/load_balancers", body, format="json")
    assert r.status_code == 422 and "forwarding_rules[0].entry_port" in r.json()["errors"]
    r = api.post("/v2/load_balancers", {**body, "forwarding_rules": []}, format="json")
    assert r.status_code == 422 and "forwarding_rules" in r.json()["errors"]
    r = api.post("/v2/load_balancers", {**lb_body("", backend), "region": None}, format="json")
    assert r.status_code == 422 and "region" in r.json()["errors"]
    assert LoadBalancer.objects.count() == 0


def test_targets_inside_the_platform_and_config_smuggling_are_refused(api, lb_setup, settings):
    _, _, backend = lb_setup
    settings.CERTHUB_ALLOW_PRIVATE_TARGETS = False  # production: only public addresses
    body = {**lb_body("", backend), "forwarding_rules": [lb_body("", backend)["forwarding_rules"][1]]}
    for target in ("127.0.0.1", "10.1.2.3", "169.254.169.254", "fe80::1%eth0\nglobal\n    stats socket"):
        r = api.post("/v2/load_balancers", {**body, "target_addresses": [target]}, format="json")
        assert r.status_code == 422 and "target_addresses[0]" in r.json()["errors"], target
    settings.CERTHUB_ALLOW_PRIVATE_TARGETS = True  # even here, a %scope is never taken
    r = api.post("/v2/load_balancers", {**body, "target_addresses": ["fe80::1%lo"]}, format="json")
    assert r.status_code == 422 and "%scope" in r.json()["message"]
    assert LoadBalancer.objects.count() == 0


def test_droplets_are_refused_with_what_to_use_and_the_cache_has_nothing_to_clear(api, lb_setup):
    _, _, backend = lb_setup
    rules = [lb_body("", backend)["forwarding_rules"][1]]
    lb = api.post("/v2/load_balancers", {**lb_body("", backend), "forwarding_rules": rules}, format="json").json()
    path = f"/v2/load_balancers/{lb['load_balancer']['id']}"
    r = api.post(f"{path}/droplets", {"droplet_ids": [3164444]}, format="json")
    assert r.status_code == 422 and "target_addresses" in r.json()["errors"]["droplet_ids"][0]
    assert api.delete(f"{path}/droplets", {"droplet_ids": [3164444]}, format="json").status_code == 422
    assert api.delete(f"{path}/cache").status_code == 204
    assert LoadBalancer.objects.get().target_addresses == [backend.host]


def test_a_node_down_holds_up_no_other_node_and_the_team_hears_when_retries_run_out(api, lb_setup, settings):
    from django.core import mail

    process, node, backend = lb_setup
    settings.CERTHUB_DELIVERY_RETRY_BUDGET_SECONDS = 3
    certificate = issue(api, "shop", ["shop.alpha.test"])
    with haproxy_node("lb-other") as (_, other_node):
        first = api.post("/v2/load_balancers", lb_body(certificate["id"], backend, name="a"), format="json")
        second = api.post("/v2/load_balancers", lb_body(certificate["id"], backend, name="b"), format="json")
        a, b = first.json()["load_balancer"], second.json()["load_balancer"]
        assert {LoadBalancer.objects.get(pk=a["id"]).node_id, LoadBalancer.objects.get(pk=b["id"]).node_id} == {
            node.pk, other_node.pk,
        }  # fmt: skip
        wait_for(lambda: verified(certificate["id"], a["id"]) and verified(certificate["id"], b["id"]))
        down, up = (a, b) if LoadBalancer.objects.get(pk=a["id"]).node_id == node.pk else (b, a)

        process.stop()
        api.post(f"/v2/certificates/{certificate['id']}/actions", {"type": "renew"}, format="json")
        fresh = wait_for(lambda: verified(certificate["id"], up["id"]), what="the other node, not held up")
        assert fresh.attempts == 1

        def failed():
            return Deployment.objects.filter(target_id=down["id"], status=Deployment.Status.FAILED).first()

        gave_up = wait_for(failed, timeout=30, what="retries to run out")
        assert gave_up.attempts >= 2 and "does not answer" in gave_up.last_error
        notice = wait_for(lambda: [m for m in mail.outbox if "could not be deployed" in m.subject])
        assert notice[0].to == ["owner@example.test"]
        assert notice[0].subject == f"Certificate shop could not be deployed to {down['name']}"
        assert "PRIVATE KEY" not in notice[0].body
