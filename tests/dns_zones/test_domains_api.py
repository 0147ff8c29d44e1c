"""The Domains API behaves like DigitalOcean's `/v2/domains`."""

from urllib.parse import parse_qs, urlsplit

import pytest

from dns_zones import services
from dns_zones.models import Record, Zone

pytestmark = pytest.mark.django_db


def test_create_domain_adds_soa_ns_and_apex_a(api):
    r = api.post("/v2/domains", {"name": "Example.TEST.", "ip_address": "192.0.2.10"}, format="json")
    assert r.status_code == 201, r.content
    assert r.json()["domain"]["name"] == "example.test"
    types = sorted(Zone.objects.get(name="example.test").records.values_list("type", flat=True))
    assert types == ["A", "NS", "NS", "SOA"]
    zone_file = r.json()["domain"]["zone_file"]
    assert "example.test. 1800 IN A 192.0.2.10" in zone_file
    assert "IN SOA ns1.certhub.test. hostmaster.certhub.test." in zone_file


def test_create_domain_accepts_internationalised_name(api):
    r = api.post("/v2/domains", {"name": "bücher.test"}, format="json")
    assert r.status_code == 201, r.content
    assert r.json()["domain"]["name"] == "xn--bcher-kva.test"


@pytest.mark.parametrize(
    ("body", "field", "reason"),
    [
        ({"name": "co.uk"}, "name", "public suffix"),
        ({"name": "localhost"}, "name", "at least two labels"),
        ({"name": "192.0.2.1"}, "name", "not an IP address"),
        ({"name": "bad_label.test"}, "name", "letters, digits"),
        ({"name": "a" * 64 + ".test"}, "name", "longer than 63"),
        ({"name": ""}, "name", "domain name"),
        ({}, "name", "domain name"),
        ({"name": 42}, "name", "domain name"),
        ({"name": "ok.test", "ip_address": "300.1.1.1"}, "ip_address", "IPv4"),
    ],
)
def test_create_domain_rejects_bad_input_naming_field_and_reason(api, body, field, reason):
    r = api.post("/v2/domains", body, format="json")
    assert r.status_code == 422, r.content
    error = r.json()
    assert error["id"] == "unprocessable_entity"
    assert error["message"].startswith(f"{field}: ")
    assert reason in error["message"]
    assert error["errors"][field]
    assert not Zone.objects.exists()


def test_zone_name_taken_by_another_team_gets_the_same_answer_as_any_taken_name(api, other_team):
    services.zone_create(team=other_team, name="taken.test")
    for name in ("taken.test", "sub.taken.test"):
        r = api.post("/v2/domains", {"name": name}, format="json")
        assert r.status_code == 422
        assert r.json()["message"] == "name: is already in use"
    assert Zone.objects.filter(team__name="acme").count() == 0


def test_zone_above_an_existing_zone_is_refused(api, other_team):
    services.zone_create(team=other_team, name="deep.parent.test")
    r = api.post("/v2/domains", {"name": "parent.test"}, format="json")
    assert r.status_code == 422
    assert r.json()["message"] == "name: is already in use"  # not whose, nor which zone
    assert "deep.parent.test" not in r.content.decode()
    assert not Zone.objects.filter(name="parent.test").exists()


def test_list_domains_paginates_with_links_and_meta(api, team):
    for i in range(5):
        services.zone_create(team=team, name=f"z{i}.test")
    r = api.get("/v2/domains?per_page=2&page=2")
    body = r.json()
    assert r.status_code == 200
    assert [d["name"] for d in body["domains"]] == ["z2.test", "z3.test"]
    assert body["meta"] == {"total": 5}
    pages = body["links"]["pages"]
    assert parse_qs(urlsplit(pages["prev"]).query) == {"page": ["1"], "per_page": ["2"]}
    assert parse_qs(urlsplit(pages["next"]).query)["page"] == ["3"]
    assert parse_qs(urlsplit(pages["last"]).query)["page"] == ["3"]
    single = api.get("/v2/domains?per_page=200").json()
    assert single["links"] == {} and len(single["domains"]) == 5


@pytest.mark.parametrize("query", ["per_page=0", "per_page=201", "per_page=x", "page=0", "page=-1"])
def test_bad_pagination_is_422(api, query):
    r = api.get(f"/v2/domains?{query}")
    assert r.status_code == 422
    assert r.json()["message"].split(":")[0] in ("page", "per_page")


def test_get_and_delete_domain(api, team):
    services.zone_create(team=team, name="gone.test")
    assert api.get("/v2/domains/gone.test").json()["domain"]["name"] == "gone.test"
    r = api.delete("/v2/domains/gone.test")
    assert r.status_code == 204 and r.content == b""
    assert api.get("/v2/domains/gone.test").status_code == 404
    assert not Record.objects.exists()


def test_domain_list_query_count_is_constant(api, team, django_assert_max_num_queries):
    for i in range(10):
        services.zone_create(team=team, name=f"q{i}.test")
    with django_assert_max_num_queries(6):
        assert len(api.get("/v2/domains").json()["domains"]) == 10


def test_the_platforms_zones_and_names_around_them_are_taken(api, settings):
    settings.CERTHUB_PLATFORM_ZONES = ["cdn.certhub.test"]
    for name in ("cdn.certhub.test", "x.cdn.certhub.test", "certhub.test"):
        r = api.post("/v2/domains", {"name": name}, format="json")
        assert r.status_code == 422 and r.json()["errors"] == {"name": ["is already in use"]}, name
    assert api.post("/v2/domains", {"name": "other.test"}, format="json").status_code == 201
