"""Product pages: load balancers, CDN endpoints, databases and webhooks through the control panel.

Nodes are rows only (no HAProxy or nginx runs here): the pages plan deployments, and
`kick_on_commit` is replaced by a recorder so no Celery task is enqueued. One slow test creates a
database on a real mariadbd to see its password shown once.
"""

import re
import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from certhub.ports import free_port
from certificates.models import Certificate, CertificateVersion
from distribution import cdn, databases, delivery, load_balancers, webhooks
from distribution.models import CdnEndpoint, DatabaseCluster, Deployment, LoadBalancer, Node, Webhook, WebhookDelivery
from distribution.nodes.mariadb import MariaDBNode
from tests.distribution.conftest import make_certificate, make_version

pytestmark = pytest.mark.django_db
WHERE_SERVED = ["distribution.selectors.where_served"]


@pytest.fixture
def kicks(monkeypatch) -> list[int]:
    """The nodes delivery was asked to work on; nothing is enqueued."""
    kicked: list[int] = []
    monkeypatch.setattr(delivery, "kick_on_commit", kicked.append)
    return kicked


@pytest.fixture
def haproxy(db, kicks) -> Node:
    return Node.objects.create(name="lb1", kind=Node.Kind.HAPROXY)


@pytest.fixture
def edge(db, kicks) -> Node:
    return Node.objects.create(name="edge1", kind=Node.Kind.NGINX, address="127.0.0.1", port=8443)


def verified_certificate(team, name: str = "www", serial: str = "0a1b") -> Certificate:
    """A certificate for <name>.example.test with a current version, as issuance leaves it."""
    certificate = make_certificate(team, name)
    version = make_version(certificate, serial=serial)
    certificate.current_version = version
    certificate.state = Certificate.State.VERIFIED
    certificate.save(update_fields=["current_version", "state"])
    return certificate


@pytest.fixture
def certificate(team) -> Certificate:
    return verified_certificate(team)


def rules_data(*rows: dict) -> dict:
    """A rules formset as the page posts it: the management form and one row per rule."""
    data = {"rules-TOTAL_FORMS": str(len(rows)), "rules-INITIAL_FORMS": "0"}
    data.update({"rules-MIN_NUM_FORMS": "0", "rules-MAX_NUM_FORMS": "1000"})
    for index, rule in enumerate(rows):
        data.update({f"rules-{index}-{key}": value for key, value in rule.items()})
    return data


HTTPS_RULE = {"entry_protocol": "https", "entry_port": "443", "target_protocol": "http", "target_port": "8080"}
HTTP_RULE = {"entry_protocol": "http", "entry_port": "80", "target_protocol": "http", "target_port": "8080"}
BLANK_ROW = {"entry_protocol": "https", "target_protocol": "http"}  # what a browser posts for a row left empty


def lb_post(certificate: Certificate | None, **fields) -> dict:
    https = {**HTTPS_RULE, "certificate": str(certificate.pk) if certificate else ""}
    return {
        "name": "web-lb", "region": "nyc3", "target_addresses": "10.0.0.5, 10.0.0.6", "redirect_http_to_https": "on",
        **rules_data(https, HTTP_RULE, BLANK_ROW),
        **fields,
    }  # fmt: skip


def label_of(html: str, name: str) -> str:
    """The <label> around the field named `name`: where its errors are shown."""
    match = re.search(r'<label>(?:(?!<label>).)*?name="' + re.escape(name) + r'".*?</label>', html, re.S)
    assert match, f"no label around {name}"
    return match.group(0)


def test_pages_require_sign_in():
    for url in ("/products/load-balancers/", "/products/cdn/", "/products/databases/", "/products/webhooks/"):
        r = Client().get(url)
        assert r.status_code == 302 and r["Location"].startswith("/login/"), url


def test_navigation_links_every_product_page(browser):
    html = browser.get("/products/load-balancers/").content.decode()
    for url in ("/products/load-balancers/", "/products/cdn/", "/products/databases/", "/products/webhooks/"):
        assert f'href="{url}"' in html


def test_create_a_load_balancer_with_a_certificate_on_the_page(browser, team, other_team, haproxy, certificate, kicks):
    theirs = verified_certificate(other_team, "theirs")
    form = browser.get("/products/load-balancers/new").content.decode()
    assert f'value="{certificate.pk}"' in form and f'value="{theirs.pk}"' not in form
    assert "<label>Name" in label_of(form, "name") and "Certificate" in label_of(form, "rules-0-certificate")

    r = browser.post("/products/load-balancers/new", lb_post(certificate))
    lb = LoadBalancer.objects.get(team=team, name="web-lb")
    assert r.status_code == 302 and r["Location"] == f"/products/load-balancers/{lb.pk}/"
    assert lb.target_addresses == ["10.0.0.5", "10.0.0.6"] and lb.redirect_http_to_https
    rules = {(r.entry_protocol, r.entry_port, r.target_port, r.certificate_id) for r in lb.forwarding_rules.all()}
    assert rules == {("https", 443, 8080, certificate.pk), ("http", 80, 8080, None)}
    deployment = Deployment.objects.get(target_kind="load_balancer", target_id=str(lb.pk))
    assert deployment.version_id == certificate.current_version_id and deployment.status == "pending"
    assert haproxy.pk in kicks

    detail = browser.get(r["Location"]).content.decode()
    assert lb.ip in detail and "https:443" in detail and "http:80" in detail
    assert f'href="/certificates/{certificate.pk}/"' in detail
    assert "<code>0a1b</code>" in detail and 'class="state-pending">pending<' in detail


def test_errors_are_shown_next_to_their_fields_and_nothing_is_stored(browser, other_team, haproxy, certificate):
    no_certificate = browser.post("/products/load-balancers/new", lb_post(None)).content.decode()
    assert "is required for https entry (or TLS passthrough)" in label_of(no_certificate, "rules-0-certificate")

    bad_port = lb_post(certificate, **{"rules-1-entry_port": "70000", "target_addresses": "10.0.0.5 not-an-ip"})
    html = browser.post("/products/load-balancers/new", bad_port).content.decode()
    # The first bad field stops the service: the port is reported where it was typed, not on row 0.
    assert "must be a port number from 1 to 65535" in label_of(html, "rules-1-entry_port")
    assert "must be a port number" not in label_of(html, "rules-0-entry_port")

    html = browser.post("/products/load-balancers/new", lb_post(certificate, target_addresses="not-an-ip")).content
    assert "must be an IPv4 or IPv6 address" in label_of(html.decode(), "target_addresses")

    theirs = verified_certificate(other_team, "theirs")
    html = browser.post("/products/load-balancers/new", lb_post(theirs)).content.decode()
    assert "Select a valid choice" in label_of(html, "rules-0-certificate")

    passthrough = lb_post(certificate, **{"rules-0-tls_passthrough": "on", "rules-0-target_protocol": "http"})
    html = browser.post("/products/load-balancers/new", passthrough).content.decode()
    assert "needs https as both entry protocol and target protocol" in label_of(html, "rules-0-tls_passthrough")

    no_rules = {"name": "web-lb", "region": "nyc3", "target_addresses": "", **rules_data(BLANK_ROW, BLANK_ROW)}
    html = browser.post("/products/load-balancers/new", no_rules).content.decode()
    assert 'id="rules"' in html and "must be a list of at least one forwarding rule" in html
    assert not LoadBalancer.objects.exists() and not Deployment.objects.exists()


def test_edit_keeps_what_only_the_api_sets_and_removes_a_rule(browser, team, haproxy, certificate):
    lb = load_balancers.load_balancer_create(
        team=team,
        data={"name": "web-lb", "region": "nyc3", "algorithm": "least_connections",
              "forwarding_rules": [{**HTTPS_RULE, "entry_port": 443, "target_port": 8080,
                                    "certificate_id": str(certificate.pk)},
                                   {**HTTP_RULE, "entry_port": 80, "target_port": 8080}]},
    )  # fmt: skip
    page = browser.get(f"/products/load-balancers/{lb.pk}/edit").content.decode()
    # Rules come in entry port order: 80, then 443 with its certificate chosen.
    assert 'value="web-lb"' in page and 'name="rules-0-entry_port" value="80"' in page
    assert f'<option value="{certificate.pk}" selected>' in label_of(page, "rules-1-certificate")
    data = {
        "name": "renamed", "region": "nyc3", "target_addresses": "10.0.0.9",
        "rules-TOTAL_FORMS": "3", "rules-INITIAL_FORMS": "2", "rules-MIN_NUM_FORMS": "0", "rules-MAX_NUM_FORMS": "1000",
        **{f"rules-0-{k}": v for k, v in HTTP_RULE.items()}, "rules-0-DELETE": "on",
        **{f"rules-1-{k}": v for k, v in HTTPS_RULE.items()}, "rules-1-certificate": str(certificate.pk),
        **{f"rules-2-{k}": v for k, v in BLANK_ROW.items()},
    }  # fmt: skip
    r = browser.post(f"/products/load-balancers/{lb.pk}/edit", data)
    assert r.status_code == 302
    lb.refresh_from_db()
    assert (lb.name, lb.algorithm, lb.target_addresses) == ("renamed", "least_connections", ["10.0.0.9"])
    assert list(lb.forwarding_rules.values_list("entry_port", flat=True)) == [443]


def test_delete_a_load_balancer_after_confirming(browser, team, haproxy, certificate):
    lb = load_balancers.load_balancer_create(
        team=team, data={"name": "gone", "region": "nyc3", "forwarding_rules": [
            {**HTTP_RULE, "entry_port": 80, "target_port": 8080}]},
    )  # fmt: skip
    confirm = browser.get(f"/products/load-balancers/{lb.pk}/delete")
    assert b"Delete load balancer gone?" in confirm.content and LoadBalancer.objects.filter(pk=lb.pk).exists()
    r = browser.post(f"/products/load-balancers/{lb.pk}/delete")
    assert r.status_code == 302 and r["Location"] == "/products/load-balancers/"
    assert not LoadBalancer.objects.filter(pk=lb.pk).exists()


def test_cdn_endpoint_create_edit_and_delete_through_pages(browser, team, edge, certificate):
    bare = {"origin": "static.origin.test", "ttl": "600", "custom_domain": "www.example.test", "certificate": ""}
    html = browser.post("/products/cdn/new", bare).content.decode()
    assert "is required with custom domain: the certificate served for it" in label_of(html, "certificate")
    html = browser.post("/products/cdn/new", {**bare, "ttl": "601"}).content.decode()
    assert "Select a valid choice" in label_of(html, "ttl")
    assert not CdnEndpoint.objects.exists()

    r = browser.post("/products/cdn/new", {**bare, "certificate": str(certificate.pk)})
    endpoint = CdnEndpoint.objects.get(team=team)
    assert r.status_code == 302 and r["Location"] == f"/products/cdn/{endpoint.pk}/"
    assert (endpoint.origin, endpoint.ttl, endpoint.certificate_id) == ("static.origin.test", 600, certificate.pk)
    detail = browser.get(r["Location"]).content.decode()
    assert endpoint.endpoint in detail and 'class="state-pending">pending<' in detail

    r = browser.post(f"/products/cdn/{endpoint.pk}/edit", {"ttl": "86400", "custom_domain": "", "certificate": ""})
    endpoint.refresh_from_db()
    assert r.status_code == 302 and (endpoint.ttl, endpoint.custom_domain, endpoint.certificate_id) == (86400, "", None)

    assert b"Delete CDN endpoint" in browser.get(f"/products/cdn/{endpoint.pk}/delete").content
    browser.post(f"/products/cdn/{endpoint.pk}/delete")
    assert not CdnEndpoint.objects.exists()


def database_row(team, node: Node, name: str = "backend") -> DatabaseCluster:
    suffix = uuid.uuid4().hex[:12]
    return DatabaseCluster.objects.create(
        team=team, node=node, name=name, size="db-s-1vcpu-1gb", region="nyc3", host=f"{name}-{suffix}.db.test",
        db_name=f"db_{suffix}", db_user=f"u_{suffix}", password="hunter2-never-shown",
    )  # fmt: skip


@pytest.fixture
def database_node(db) -> Node:
    return Node.objects.create(name="db1", kind=Node.Kind.MARIADB, address="127.0.17.2", port=3307)


def test_database_detail_shows_the_connection_but_not_the_password(browser, team, database_node):
    cluster = database_row(team, database_node)
    assert cluster.name.encode() in browser.get("/products/databases/").content
    html = browser.get(f"/products/databases/{cluster.pk}/").content.decode()
    assert cluster.host in html and cluster.db_user in html and cluster.db_name in html and ">3307<" in html
    assert "shown once at creation" in html and "hunter2" not in html


def test_webhook_secret_is_shown_once_and_deliveries_show_the_answer(browser, team):
    html = browser.post("/products/webhooks/", {"url": "ftp://example.test/"}).content.decode()
    assert "must be an http:// or https:// URL with a host name" in label_of(html, "url")
    assert not Webhook.objects.exists()

    r = browser.post("/products/webhooks/", {"url": "https://hooks.example.test/certhub"})
    webhook = Webhook.objects.get(team=team)
    assert r["Cache-Control"] == "no-store" and webhook.secret in r.content.decode()
    assert webhook.secret not in browser.get("/products/webhooks/").content.decode()

    WebhookDelivery.objects.create(
        webhook=webhook, event_id=uuid.uuid4(), kind="certificate.version_created", status="failed", attempts=3,
        response_status=500, response_body="upstream exploded " + "x" * 400, last_error="answered HTTP 500",
    )  # fmt: skip
    html = browser.get(f"/products/webhooks/{webhook.pk}/").content.decode()
    assert "certificate.version_created" in html and ">500<" in html and "answered HTTP 500" in html
    assert "upstream exploded" in html and "x" * 100 not in html  # the first characters only
    assert webhook.secret not in html

    browser.post(f"/products/webhooks/{webhook.pk}/delete")
    assert not Webhook.objects.exists()


@pytest.fixture
def theirs(team, haproxy, edge, database_node, certificate) -> dict[str, str]:
    """One of each product of the owner's team, as the URLs an outsider must not reach."""
    lb = load_balancers.load_balancer_create(
        team=team, data={"name": "acme-lb", "region": "nyc3", "forwarding_rules": [
            {**HTTPS_RULE, "entry_port": 443, "target_port": 8080, "certificate_id": str(certificate.pk)}]},
    )  # fmt: skip
    endpoint = cdn.cdn_endpoint_create(team=team, data={"origin": "acme-origin.test"})
    cluster = database_row(team, database_node, name="acme-db")
    webhook, _ = webhooks.webhook_create(team=team, url="https://acme-hooks.test/")
    return {
        "lb": f"/products/load-balancers/{lb.pk}/", "cdn": f"/products/cdn/{endpoint.pk}/",
        "db": f"/products/databases/{cluster.pk}/", "webhook": f"/products/webhooks/{webhook.pk}/",
    }  # fmt: skip


def test_another_teams_products_are_404_on_every_page(outsider, theirs):
    client = Client()
    client.force_login(outsider)
    for listing in ("/products/load-balancers/", "/products/cdn/", "/products/databases/", "/products/webhooks/"):
        assert b"acme" not in client.get(listing).content, listing
    pages = [theirs["lb"], theirs["lb"] + "edit", theirs["lb"] + "delete", theirs["cdn"], theirs["cdn"] + "edit",
             theirs["cdn"] + "delete", theirs["db"], theirs["db"] + "delete", theirs["webhook"],
             theirs["webhook"] + "delete"]  # fmt: skip
    for url in pages:
        assert client.get(url).status_code == 404, url
        assert client.post(url, {"name": "stolen", "ttl": "60"}).status_code == 404, url
    assert LoadBalancer.objects.filter(name="acme-lb").exists() and CdnEndpoint.objects.exists()
    assert DatabaseCluster.objects.filter(name="acme-db").exists() and Webhook.objects.exists()


def test_posts_without_csrf_token_are_refused(owner, theirs, certificate):
    client = Client(enforce_csrf_checks=True)
    client.force_login(owner)
    posts = [
        ("/products/load-balancers/new", lb_post(certificate, name="csrf-lb")),
        ("/products/cdn/new", {"origin": "csrf.origin.test", "ttl": "600"}),
        ("/products/databases/new", {"name": "csrf-db", "size": "db-s-1vcpu-1gb", "region": "nyc3"}),
        ("/products/webhooks/", {"url": "https://csrf.example.test/"}),
        *[(url + "delete", {}) for url in theirs.values()],
    ]
    for url, data in posts:
        assert client.post(url, data).status_code == 403, url
    assert LoadBalancer.objects.count() == 1 and CdnEndpoint.objects.count() == 1
    assert DatabaseCluster.objects.count() == 1 and Webhook.objects.count() == 1
    form = client.get("/products/load-balancers/new").content.decode()
    assert 'name="csrfmiddlewaretoken"' in form


def test_the_certificate_page_shows_where_it_is_served(browser, team, settings, haproxy, certificate):
    settings.CERTHUB_CERTIFICATE_WHERE_SERVED = WHERE_SERVED
    lb = load_balancers.load_balancer_create(
        team=team, data={"name": "web-lb", "region": "nyc3", "forwarding_rules": [
            {**HTTPS_RULE, "entry_port": 443, "target_port": 8080, "certificate_id": str(certificate.pk)}]},
    )  # fmt: skip
    Deployment.objects.filter(target_id=str(lb.pk)).update(
        status="verified", attempts=1, deployed_at=timezone.now(), verified_at=timezone.now(), served_serial="0a1b"
    )
    old = make_version(certificate, serial="0999")
    CertificateVersion.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=60))  # the previous
    Deployment.objects.create(
        team=team, certificate=certificate, version=old, node=haproxy, target_kind="load_balancer",
        target_id=str(uuid.uuid4()), target_name="deleted-lb", status="failed", attempts=7,
        last_error="connection refused by the node",
    )  # fmt: skip

    html = browser.get(f"/certificates/{certificate.pk}/").content.decode()
    section = html[html.index('id="where-served"') :]
    link = f'<a href="/products/load-balancers/{lb.pk}/">web-lb</a>'
    assert f"Load balancer {link}" in section[: section.index("</ul>")]  # in the list of uses
    current = section[section.index("Version <code>0a1b</code>") : section.index("Version <code>0999</code>")]
    assert link in current and 'class="state-verified">verified<' in current and "0a1b</td>" in current
    older = section[section.index("Version <code>0999</code>") :]
    assert "deleted-lb" in older and 'href="/products/load-balancers/' not in older  # gone: no link
    assert "connection refused by the node" in older and "<td>7</td>" in older


def test_the_certificate_page_without_deployments_says_nothing_uses_it(browser, settings, certificate):
    settings.CERTHUB_CERTIFICATE_WHERE_SERVED = WHERE_SERVED
    html = browser.get(f"/certificates/{certificate.pk}/").content.decode()
    assert "Where it is served" in html and "Nothing uses this certificate yet" in html


@pytest.fixture
def mariadb(tmp_path) -> Iterator[MariaDBNode]:
    host = "127.0.17.41"
    node = MariaDBNode.start(tmp_path / "db", host=host, port=free_port(host))
    yield node
    node.stop()


@pytest.mark.slow
def test_a_database_created_on_the_page_shows_its_password_once(browser, team, mariadb, kicks):
    databases.register_database_node(name="pagedb", process=mariadb)
    html = browser.post("/products/databases/new", {"name": "Bad_Name", "size": "db-s-1vcpu-1gb", "region": "nyc3"})
    assert "must be 3 to 63 lowercase letters" in label_of(html.content.decode(), "name")

    r = browser.post("/products/databases/new", {"name": "backend", "size": "db-s-1vcpu-1gb", "region": "nyc3"})
    cluster = DatabaseCluster.objects.get(team=team, name="backend")
    assert r.status_code == 200 and r["Cache-Control"] == "no-store"
    shown = r.content.decode()
    assert cluster.password in shown and "shown only once" in shown and cluster.host in shown
    again = browser.get(f"/products/databases/{cluster.pk}/").content.decode()
    assert cluster.password not in again and "shown once at creation" in again

    browser.post(f"/products/databases/{cluster.pk}/delete")
    assert not DatabaseCluster.objects.exists()
