import pytest

from dns_zones.models import Record, Zone

pytestmark = pytest.mark.django_db


def test_create_domain_adds_soa_ns_and_apex_a(api):
    r = api.post("/v2/domains", {"name": "Example.TEST.", "ip_address": "192.0.2.10"}, format="json")
    assert r.status_code == 201, r.content
    assert r.json()["domain"]["name"] == "example.test"
    types = sorted(Zone.objects.get(name="example.test").records.values_list("type", flat=True))
    assert types == ["A", "NS", "NS", "SOA"]
    assert "example.test. 1800 IN A 192.0.2.10" in r.json()["domain"]["zone_file"]
