"""Another team's objects are 404 through every `/v2/` route, as if they did not exist.

The routes are read from the URL configuration, so a route added later is walked too; a new
path parameter must be taught to `owner_objects` below or the test fails.
"""

import re

import pytest
from django.urls import URLPattern, URLResolver, get_resolver

from certificates.models import Certificate
from distribution.models import CdnEndpoint, DatabaseCluster, LoadBalancer, Node, Webhook
from dns_zones import services

pytestmark = pytest.mark.django_db
METHODS = ["get", "put", "patch", "delete", "post"]


def v2_routes() -> list[str]:
    routes = []

    def walk(patterns, prefix=""):
        for p in patterns:
            if isinstance(p, URLResolver):
                walk(p.url_patterns, prefix + str(p.pattern))
            elif isinstance(p, URLPattern):
                routes.append(prefix + str(p.pattern))

    walk(get_resolver().url_patterns)
    return [r for r in routes if r.startswith("v2/") and "openapi" not in r]


@pytest.fixture
def owner_objects(team):
    zone = services.zone_create(team=team, name="secret-acme.test")
    record = services.record_create(zone=zone, data={"type": "TXT", "name": "hidden", "data": "acme-only"})
    certificate = Certificate.objects.create(
        team=team, name="acme-only-cert", dns_names=["secret-acme.test"], names_key="secret-acme.test"
    )
    lb_node = Node.objects.create(name="lb1", kind=Node.Kind.HAPROXY)
    lb = LoadBalancer.objects.create(team=team, node=lb_node, name="secret-acme-lb", region="nyc3", ip="127.0.80.9")
    edge = Node.objects.create(name="edge1", kind=Node.Kind.NGINX, address="127.0.90.9", port=443)
    endpoint = CdnEndpoint.objects.create(
        team=team, node=edge, origin="secret-acme.test", endpoint="secret-acme.cdn.certhub.test"
    )
    db_node = Node.objects.create(name="db1", kind=Node.Kind.MARIADB, address="127.0.91.9", port=3306)
    cluster = DatabaseCluster.objects.create(
        team=team, node=db_node, name="secret-acme-db", size="db-s-1vcpu-1gb", region="nyc3",
        host="secret-acme-db.db1.db.certhub.test", db_name="db_acme", db_user="u_acme", password="acme-only-pw",
    )  # fmt: skip
    webhook = Webhook.objects.create(team=team, url="https://secret-acme.test/hook", secret="whsec_acme-only")
    return {
        "domain_name": zone.name, "record_id": record.id, "certificate_id": certificate.pk, "lb_id": lb.pk,
        "cdn_id": endpoint.pk, "cluster_id": cluster.pk, "webhook_id": webhook.pk,
    }  # fmt: skip


def test_every_v2_route_is_404_for_another_team(outsider_api, owner_objects):
    routes = v2_routes()
    assert any("<" in r for r in routes), routes
    for route in routes:
        params = re.findall(r"<(?:\w+:)?(\w+)>", route)
        missing = [p for p in params if p not in owner_objects]
        assert not missing, f"teach this test the parameter(s) {missing} of {route}"
        url = "/" + re.sub(r"<(?:\w+:)?(\w+)>", lambda m: str(owner_objects[m.group(1)]), route)
        if not params:
            listing = outsider_api.get(url)
            assert listing.status_code == 200, url
            assert "secret-acme" not in listing.content.decode(), url
            continue
        for method in METHODS:
            r = getattr(outsider_api, method)(url, {}, format="json")
            assert r.status_code in (404, 405), (method, url, r.status_code)
            if r.status_code == 404:
                assert r.json() == {
                    "id": "not_found",
                    "message": "The resource you were accessing could not be found.",
                }
            assert "acme-only" not in r.content.decode()
    assert Certificate.objects.filter(name="acme-only-cert").exists()
    assert LoadBalancer.objects.filter(name="secret-acme-lb").exists() and Webhook.objects.exists()
    assert CdnEndpoint.objects.exists() and DatabaseCluster.objects.exists()


def test_the_owner_reaches_the_same_routes(api, owner_objects):
    assert api.get(f"/v2/domains/{owner_objects['domain_name']}").status_code == 200
    r = api.get(f"/v2/domains/{owner_objects['domain_name']}/records/{owner_objects['record_id']}")
    assert r.json()["domain_record"]["data"] == "acme-only"
