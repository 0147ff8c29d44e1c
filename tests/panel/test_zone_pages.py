"""Zone pages: sign-in required, CSRF enforced, scoped to the member's team."""

import pytest
from django.test import Client

from dns_zones import services
from dns_zones.models import Record, Zone

pytestmark = pytest.mark.django_db


def test_pages_require_sign_in():
    r = Client().get("/zones/")
    assert r.status_code == 302 and r["Location"].startswith("/login/")


def test_sign_in_with_password_reaches_the_zone_list(owner):
    client = Client()
    r = client.post("/login/", {"username": "owner", "password": "correct horse 42!"}, follow=True)
    assert r.redirect_chain[-1][0] == "/zones/"
    assert b"DNS zones" in r.content


def test_create_zone_and_record_through_pages(browser):
    r = browser.post("/zones/", {"name": "panel.test", "ip_address": ""}, follow=True)
    assert r.status_code == 200 and b"Zone panel.test created." in r.content
    r = browser.post("/zones/panel.test/", {"type": "TXT", "name": "hello", "data": "world", "ttl": 300}, follow=True)
    assert b"TXT record hello added." in r.content
    assert Record.objects.filter(zone__name="panel.test", type="TXT", data="world", ttl=300).exists()


def test_bad_record_shows_the_reason_and_stores_nothing(browser, team):
    services.zone_create(team=team, name="panel.test")
    r = browser.post("/zones/panel.test/", {"type": "A", "name": "www", "data": "not-an-ip"})
    assert r.status_code == 200
    assert b"must be an IPv4 address" in r.content
    assert not Record.objects.filter(type="A").exists()


def test_edit_and_delete_record_through_pages(browser, team):
    zone = services.zone_create(team=team, name="panel.test")
    record = services.record_create(zone=zone, data={"type": "A", "name": "www", "data": "192.0.2.1"})
    url = f"/zones/panel.test/records/{record.id}/"
    assert b'value="192.0.2.1"' in browser.get(url).content
    browser.post(url, {"type": "A", "name": "www", "data": "192.0.2.9", "ttl": 600})
    record.refresh_from_db()
    assert (record.data, record.ttl) == ("192.0.2.9", 600)
    browser.post(url + "delete")
    assert not Record.objects.filter(pk=record.pk).exists()


def test_posts_without_csrf_token_are_refused(owner):
    client = Client(enforce_csrf_checks=True)
    client.force_login(owner)
    r = client.post("/zones/", {"name": "csrf.test"})
    assert r.status_code == 403
    assert not Zone.objects.exists()


def test_another_teams_zone_is_404_on_every_page(outsider, team):
    zone = services.zone_create(team=team, name="private.test")
    record = zone.records.first()
    client = Client()
    client.force_login(outsider)
    assert b"private.test" not in client.get("/zones/").content
    for url in ("/zones/private.test/", f"/zones/private.test/records/{record.id}/"):
        assert client.get(url).status_code == 404
    for url in ("/zones/private.test/delete", f"/zones/private.test/records/{record.id}/delete"):
        assert client.post(url).status_code == 404
    assert Zone.objects.filter(name="private.test").exists()


def test_tokens_page_shows_a_new_token_once_and_revokes(browser):
    r = browser.post("/tokens/", {"name": "ci", "scopes": ["read", "write"]})
    assert b"shown only once" in r.content and r["Cache-Control"] == "no-store"
    assert b"shown only once" not in browser.get("/tokens/").content
    from certhub.models import ApiToken

    token = ApiToken.objects.get(name="ci")
    browser.post(f"/tokens/{token.id}/revoke")
    token.refresh_from_db()
    assert token.revoked_at is not None
