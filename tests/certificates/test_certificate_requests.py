"""A certificate request is validated before anything is ordered: 422 naming field and reason."""

import pytest

from certificates.models import Certificate, Issuance
from dns_zones import services as zone_services

pytestmark = pytest.mark.django_db


@pytest.fixture
def hosted(team, other_team):
    zone_services.zone_create(team=team, name="example.test")
    zone_services.zone_create(team=team, name="xn--bcher-kva.test")
    zone_services.zone_create(team=other_team, name="theirs.test")


def post(api, dns_names, name="cert", **extra):
    return api.post(
        "/v2/certificates", {"name": name, "type": "lets_encrypt", "dns_names": dns_names, **extra}, format="json"
    )


def test_names_are_normalised_and_deduplicated(api, hosted, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        r = post(api, ["WWW.Example.TEST.", "www.example.test", "*.example.test", "shop.bücher.test"])
    assert r.status_code == 201, r.content
    body = r.json()["certificate"]
    assert body["dns_names"] == ["www.example.test", "*.example.test", "shop.xn--bcher-kva.test"]
    assert body["state"] == "pending" and body["type"] == "lets_encrypt" and body["key_type"] == "ecdsa-p256"
    assert body["step"] == "new_order" and body["attempts"] == 0
    assert Issuance.objects.filter(certificate_id=body["id"]).count() == 1
    assert len(callbacks) == 1  # the issuance task is queued only once the request is committed


def test_unused_digitalocean_fields_may_be_null(api, hosted):
    r = post(api, ["example.test"], private_key=None, leaf_certificate=None, certificate_chain=None)
    assert r.status_code == 201, r.content


@pytest.mark.parametrize(
    ("dns_names", "reason"),
    [
        (["a.*.example.test"], "whole leftmost label"),
        (["*a.example.test"], "whole leftmost label"),
        (["*.*.example.test"], "whole leftmost label"),
        (["*.com"], "directly under a public suffix"),
        (["*.co.uk"], "directly under a public suffix"),
        (["co.uk"], "public suffix"),
        (["192.0.2.1"], "IP addresses"),
        (["[2001:db8::1]"], "IP addresses"),
        (["under_score.example.test"], "underscores"),
        (["localhost"], "single-label"),
        ([("a" * 64) + ".example.test"], "longer than 63"),
        ([".".join(["a" * 60] * 5) + ".example.test"], "longer than 253"),
        (["-bad.example.test"], "inner hyphens"),
        ([""], "non-empty"),
        ([42], "non-empty"),
        ([], "from 1 to 100"),
        ([f"n{i}.example.test" for i in range(101)], "from 1 to 100"),
        ("example.test", "must be a list"),
        (["www.theirs.test"], "not in any DNS zone of your team"),
        (["www.nowhere.test"], "not in any DNS zone of your team"),
    ],
)
def test_bad_names_are_refused_before_ordering(api, hosted, dns_names, reason):
    r = post(api, dns_names)
    assert r.status_code == 422, r.content
    assert r.json()["id"] == "unprocessable_entity"
    assert "dns_names" in r.json()["errors"] and reason in r.json()["message"]
    assert not Certificate.objects.exists() and not Issuance.objects.exists()


def test_another_teams_zone_and_a_missing_zone_get_the_same_message(api, hosted):
    theirs = post(api, ["www.theirs.test"]).json()["message"].replace("theirs", "X")
    missing = post(api, ["www.nowhere.test"]).json()["message"].replace("nowhere", "X")
    assert theirs == missing


@pytest.mark.parametrize(
    ("extra", "field", "reason"),
    [
        ({"name": ""}, "name", "required"),
        ({"name": "x" * 256}, "name", "at most 255"),
        ({"type": "self_signed"}, "type", "lets_encrypt or custom"),
        ({"key_type": "dsa"}, "key_type", "one of"),
        ({"private_key": "-----BEGIN PRIVATE KEY-----"}, "private_key", "not used"),
    ],
)
def test_other_fields_are_validated(api, hosted, extra, field, reason):
    r = api.post(
        "/v2/certificates", {"name": "c", "type": "lets_encrypt", "dns_names": ["example.test"], **extra}, format="json"
    )
    assert r.status_code == 422
    assert field in r.json()["errors"] and reason in r.json()["message"]
    assert "BEGIN PRIVATE KEY" not in r.content.decode()
    assert not Certificate.objects.exists()


def test_name_is_unique_in_the_team_and_names_not_duplicated(api, outsider_api, hosted, other_team):
    assert post(api, ["example.test"], name="one").status_code == 201
    r = post(api, ["www.example.test"], name="one")
    assert r.status_code == 422 and "name" in r.json()["errors"]
    r = post(api, ["example.test"], name="two")
    assert r.status_code == 422 and "already covers exactly these names" in r.json()["message"]
    # The same set in another order is the same certificate.
    assert post(api, ["a.example.test", "b.example.test"], name="three").status_code == 201
    assert post(api, ["b.example.test", "a.example.test"], name="four").status_code == 422
    # Names are per team: another team may use the same certificate name.
    zone_services.zone_create(team=other_team, name="globex.test")
    assert post(outsider_api, ["globex.test"], name="one").status_code == 201


@pytest.mark.parametrize("key_type", ["ecdsa-p256", "ecdsa-p384", "rsa-2048", "rsa-3072", "rsa-4096"])
def test_every_key_type_can_be_requested(api, hosted, key_type):
    r = post(api, ["example.test"], key_type=key_type)
    assert r.status_code == 201 and r.json()["certificate"]["key_type"] == key_type


def test_list_filters_by_name_and_delete_is_204(api, hosted):
    one = post(api, ["example.test"], name="one").json()["certificate"]["id"]
    post(api, ["www.example.test"], name="two")
    body = api.get("/v2/certificates?name=one").json()
    assert [c["id"] for c in body["certificates"]] == [one] and body["meta"] == {"total": 1}
    assert api.get("/v2/certificates").json()["meta"]["total"] == 2
    assert api.delete(f"/v2/certificates/{one}").status_code == 204
    assert api.get(f"/v2/certificates/{one}").status_code == 404
