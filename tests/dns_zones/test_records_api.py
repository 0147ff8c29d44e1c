"""Records under `/v2/domains/{name}/records`: each type validated, every change bumps the serial."""

import pytest

from dns_zones import services
from dns_zones.models import Record, Zone

pytestmark = pytest.mark.django_db
URL = "/v2/domains/example.test/records"


@pytest.fixture
def zone(team) -> Zone:
    return services.zone_create(team=team, name="example.test")


@pytest.mark.parametrize(
    ("body", "stored"),
    [
        ({"type": "A", "name": "www", "data": "192.0.2.1"}, {"name": "www", "data": "192.0.2.1"}),
        ({"type": "AAAA", "name": "@", "data": "2001:DB8::0:1"}, {"name": "@", "data": "2001:db8::1"}),
        ({"type": "CNAME", "name": "Blog", "data": "www"}, {"name": "blog", "data": "www.example.test."}),
        ({"type": "CNAME", "name": "ext", "data": "host.other.test."}, {"data": "host.other.test."}),
        ({"type": "TXT", "name": "_acme-challenge", "data": "x" * 600}, {"data": "x" * 600}),
        ({"type": "MX", "name": "@", "data": "mail", "priority": 10}, {"priority": 10, "data": "mail.example.test."}),
        (
            {"type": "SRV", "name": "_sip._tcp", "data": "sip", "priority": 1, "weight": 5, "port": 5060},
            {"port": 5060, "weight": 5},
        ),
        (
            {"type": "CAA", "name": "@", "data": "letsencrypt.org", "flags": 0, "tag": "issue"},
            {"tag": "issue", "flags": 0},
        ),
        ({"type": "NS", "name": "sub", "data": "ns.other.test."}, {"data": "ns.other.test."}),
        ({"type": "A", "name": "www.example.test.", "data": "192.0.2.2"}, {"name": "www"}),
        ({"type": "A", "name": "*", "data": "192.0.2.3", "ttl": 60}, {"name": "*", "ttl": 60}),
    ],
)
def test_create_record_of_each_type(api, zone, body, stored):
    serial = zone.serial
    r = api.post(URL, body, format="json")
    assert r.status_code == 201, r.content
    record = r.json()["domain_record"]
    assert set(record) == {"id", "type", "name", "data", "priority", "port", "ttl", "weight", "flags", "tag"}
    for key, value in stored.items():
        assert record[key] == value
    zone.refresh_from_db()
    assert zone.serial > serial


@pytest.mark.parametrize(
    ("body", "field", "reason"),
    [
        ({"type": "A", "name": "www", "data": "2001:db8::1"}, "data", "IPv4"),
        ({"type": "AAAA", "name": "www", "data": "192.0.2.1"}, "data", "IPv6"),
        ({"type": "CNAME", "name": "@", "data": "x.test."}, "name", "apex"),
        ({"type": "MX", "name": "@", "data": "mail"}, "priority", "required"),
        ({"type": "MX", "name": "@", "data": "mail", "priority": 70000}, "priority", "0 to 65535"),
        ({"type": "SRV", "name": "sip", "data": "x", "priority": 1, "weight": 1, "port": 1}, "name", "_service"),
        ({"type": "CAA", "name": "@", "data": "ca.test", "tag": "bogus"}, "tag", "issue"),
        ({"type": "CAA", "name": "@", "data": 'a"b', "tag": "issue"}, "data", "quotes"),
        ({"type": "TXT", "name": "t", "data": ""}, "data", "non-empty"),
        ({"type": "TXT", "name": "t", "data": "y" * 5000}, "data", "at most"),
        ({"type": "A", "name": "www", "data": "192.0.2.1", "ttl": 5}, "ttl", "30 to"),
        ({"type": "A", "name": "www", "data": "192.0.2.1", "priority": 1}, "priority", "not used"),
        ({"type": "A", "name": "a..b", "data": "192.0.2.1"}, "name", "empty label"),
        ({"type": "A", "name": "x.other.test.", "data": "192.0.2.1"}, "name", "inside the zone"),
        ({"type": "A", "name": "we b", "data": "192.0.2.1"}, "name", "letters"),
        ({"type": "PTR", "name": "www", "data": "x"}, "type", "one of"),
        ({"type": "A", "name": "www", "data": "192.0.2.1", "colour": "red"}, "colour", "not a field"),
        ({"name": "www", "data": "192.0.2.1"}, "type", "one of"),
    ],
)
def test_bad_record_is_422_with_field_and_reason_and_changes_nothing(api, zone, body, field, reason):
    before = (zone.serial, Record.objects.count())
    r = api.post(URL, body, format="json")
    assert r.status_code == 422, r.content
    assert r.json()["id"] == "unprocessable_entity"
    assert field in r.json()["errors"]
    assert reason in r.json()["message"]
    zone.refresh_from_db()
    assert (zone.serial, Record.objects.count()) == before


def test_cname_must_stay_alone_at_its_name(api, zone):
    assert api.post(URL, {"type": "A", "name": "www", "data": "192.0.2.1"}, format="json").status_code == 201
    r = api.post(URL, {"type": "CNAME", "name": "www", "data": "x.test."}, format="json")
    assert r.status_code == 422 and "only record" in r.json()["message"]
    assert api.post(URL, {"type": "CNAME", "name": "alias", "data": "x.test."}, format="json").status_code == 201
    r = api.post(URL, {"type": "TXT", "name": "alias", "data": "hi"}, format="json")
    assert r.status_code == 422 and "CNAME" in r.json()["message"]


def test_identical_record_is_refused_but_several_txt_values_share_a_name(api, zone):
    body = {"type": "TXT", "name": "_acme-challenge", "data": "one"}
    assert api.post(URL, body, format="json").status_code == 201
    assert api.post(URL, body, format="json").status_code == 422
    assert api.post(URL, {**body, "data": "two"}, format="json").status_code == 201


def test_list_records_filters_by_type_and_fully_qualified_name(api, zone):
    api.post(URL, {"type": "A", "name": "www", "data": "192.0.2.1"}, format="json")
    api.post(URL, {"type": "TXT", "name": "www", "data": "hello"}, format="json")
    body = api.get(URL).json()
    assert body["meta"]["total"] == 5  # SOA, 2 NS, A, TXT
    by_type = api.get(URL + "?type=txt").json()["domain_records"]
    assert [r["data"] for r in by_type] == ["hello"]
    by_name = api.get(URL + "?name=www.example.test").json()["domain_records"]
    assert sorted(r["type"] for r in by_name) == ["A", "TXT"]
    apex = api.get(URL + "?name=example.test&type=NS").json()["domain_records"]
    assert len(apex) == 2
    assert api.get(URL + "?type=BOGUS").status_code == 422


def test_put_replaces_and_patch_updates(api, zone):
    rid = api.post(URL, {"type": "MX", "name": "@", "data": "mail", "priority": 10}, format="json").json()[
        "domain_record"
    ]["id"]
    r = api.patch(f"{URL}/{rid}", {"priority": 20}, format="json")
    assert r.status_code == 200 and r.json()["domain_record"]["priority"] == 20
    assert r.json()["domain_record"]["data"] == "mail.example.test."
    r = api.put(f"{URL}/{rid}", {"type": "MX", "name": "@", "data": "mx2.example.test."}, format="json")
    assert r.status_code == 422 and "priority" in r.json()["errors"]
    r = api.put(f"{URL}/{rid}", {"type": "MX", "name": "@", "data": "mx2", "priority": 5}, format="json")
    assert r.status_code == 200
    assert r.json()["domain_record"] | {"id": 0} == {
        "id": 0, "type": "MX", "name": "@", "data": "mx2.example.test.", "priority": 5,
        "port": None, "ttl": 1800, "weight": None, "flags": None, "tag": None,
    }  # fmt: skip
    r = api.patch(f"{URL}/{rid}", {"type": "A"}, format="json")
    assert r.status_code == 422 and "cannot be changed" in r.json()["message"]


def test_soa_allows_only_ttl_changes_and_cannot_be_deleted(api, zone):
    soa = zone.records.get(type="SOA")
    assert api.patch(f"{URL}/{soa.id}", {"ttl": 3600}, format="json").json()["domain_record"]["ttl"] == 3600
    assert api.patch(f"{URL}/{soa.id}", {"data": "evil.test."}, format="json").status_code == 422
    r = api.delete(f"{URL}/{soa.id}")
    assert r.status_code == 422
    assert zone.records.filter(type="SOA").exists()


def test_delete_record_is_204_and_bumps_serial(api, zone):
    rid = api.post(URL, {"type": "A", "name": "www", "data": "192.0.2.1"}, format="json").json()["domain_record"]["id"]
    zone.refresh_from_db()
    serial = zone.serial
    assert api.delete(f"{URL}/{rid}").status_code == 204
    assert api.get(f"{URL}/{rid}").status_code == 404
    zone.refresh_from_db()
    assert zone.serial > serial


def test_body_must_be_a_json_object(api, zone):
    r = api.post(URL, ["not", "an", "object"], format="json")
    assert r.status_code == 422
    r = api.post(URL, "{broken", content_type="application/json")
    assert r.status_code == 400 and r.json()["id"] == "bad_request"


def test_long_utf8_txt_survives_the_split_into_255_byte_strings(api, zone):
    import dns.rdata

    from dns_zones.zonefile import rdata_text

    text = "é" * 200 + ' "quoted" \\ end'  # 400+ bytes: a two-byte character straddles the split
    r = api.post(URL, {"type": "TXT", "name": "utf8", "data": text}, format="json")
    assert r.status_code == 201 and r.json()["domain_record"]["data"] == text
    record = Record.objects.get(pk=r.json()["domain_record"]["id"])
    parsed = dns.rdata.from_text("IN", "TXT", rdata_text(zone, record))
    assert [len(s) for s in parsed.strings] == [255, len(text.encode()) - 255]
    assert b"".join(parsed.strings).decode() == text
