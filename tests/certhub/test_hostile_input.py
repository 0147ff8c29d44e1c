"""Valid JSON that cannot be stored, and requests built to cost us CPU, are refused with a clear
error and change nothing."""

import pytest

from certificates.models import Certificate
from dns_zones import services as zone_services
from dns_zones.models import Record

pytestmark = pytest.mark.django_db


def post_raw(api, path: str, body: str):
    return api.generic("POST", path, body.encode(), content_type="application/json")


def test_json_nested_too_deeply_is_a_400_not_a_500(api):
    for body in ("[" * 100_000 + "]" * 100_000, '{"a":' * 50_000 + "1" + "}" * 50_000):
        r = post_raw(api, "/v2/certificates", body)
        assert r.status_code == 400, r.status_code
        assert r.json() == {"id": "bad_request", "message": "JSON parse error - nested too deeply"}
    assert not Certificate.objects.exists()


def test_a_lone_surrogate_in_any_text_field_is_refused_and_nothing_is_stored(api, team):
    zone = zone_services.zone_create(team=team, name="hostile.test")
    cases = [
        ("/v2/certificates", '{"name": "x\\ud800", "type": "lets_encrypt", "dns_names": ["www.hostile.test"]}'),
        ("/v2/certificates", '{"name": "mine", "type": "custom", "private_key": "\\udfff", "leaf_certificate": "x"}'),
        (f"/v2/domains/{zone.name}/records", '{"type": "TXT", "name": "t", "data": "\\ud800"}'),
    ]
    for path, body in cases:
        r = post_raw(api, path, body)
        assert r.status_code == 400 and "lone surrogate" in r.json()["message"], (path, r.content)
    assert not Certificate.objects.exists()
    assert not Record.objects.filter(zone=zone, type="TXT").exists()


def test_control_characters_in_a_certificate_name_are_refused(api, team):
    zone_services.zone_create(team=team, name="hostile.test")
    for name in ("web\x00", "we\nb", "tab\there"):
        body = {"name": name, "type": "lets_encrypt", "dns_names": ["www.hostile.test"]}
        r = api.post("/v2/certificates", body, format="json")
        assert r.status_code == 422 and "control characters" in r.json()["errors"]["name"][0], repr(name)
    assert not Certificate.objects.exists()


def test_a_request_with_42000_names_is_refused_by_the_cap_before_any_name_is_read(api, team, monkeypatch):
    calls = []
    from certificates import validation

    real = validation.normalize_dns_name
    monkeypatch.setattr(validation, "normalize_dns_name", lambda raw: calls.append(raw) or real(raw))
    names = [f"n{i}.hostile.test" for i in range(42_000)]
    r = api.post("/v2/certificates", {"name": "many", "type": "lets_encrypt", "dns_names": names}, format="json")
    assert r.status_code == 422 and r.json()["errors"] == {"dns_names": ["must hold from 1 to 100 names"]}
    assert calls == []  # refused on the count alone
    assert not Certificate.objects.exists()


def test_an_aaaa_record_with_a_scope_is_refused(api, team):
    zone = zone_services.zone_create(team=team, name="hostile.test")
    r = api.post(
        f"/v2/domains/{zone.name}/records", {"type": "AAAA", "name": "v6", "data": "fe80::1%eth0"}, format="json"
    )
    assert r.status_code == 422 and "%scope" in r.json()["errors"]["data"][0]
    assert not Record.objects.filter(zone=zone, type="AAAA").exists()
