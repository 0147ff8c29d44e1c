"""Certificate pages: request by picking zone names, watch the steps, never see a key."""

import pytest
from django.test import Client
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from certificates.models import Certificate
from dns_zones import services as zone_services
from tests.panel.test_browser_zones import submit

pytestmark = pytest.mark.django_db


def test_request_by_picking_zone_names_with_a_wildcard(browser, team, django_capture_on_commit_callbacks):
    zone_services.zone_create(team=team, name="pick.test")
    page = browser.get("/certificates/")
    assert b'value="*.pick.test"' in page.content
    with django_capture_on_commit_callbacks(execute=False):
        r = browser.post(
            "/certificates/",
            {"name": "picked", "names": ["pick.test", "*.pick.test"], "other_names": "", "key_type": "ecdsa-p384"},
        )
    certificate = Certificate.objects.get(name="picked")
    assert r.status_code == 302 and r["Location"] == f"/certificates/{certificate.pk}/"
    assert certificate.dns_names == ["pick.test", "*.pick.test"] and certificate.key_type == "ecdsa-p384"
    detail = browser.get(r["Location"]).content.decode()
    assert "→ Creating the order" in detail and 'http-equiv="refresh"' in detail


def test_bad_request_on_the_page_shows_the_reason(browser, team):
    zone_services.zone_create(team=team, name="pick.test")
    r = browser.post("/certificates/", {"name": "bad", "other_names": "www.elsewhere.test", "key_type": "ecdsa-p256"})
    assert r.status_code == 200
    assert "is not in any DNS zone of your team" in r.content.decode()
    assert not Certificate.objects.exists()


def test_another_teams_certificate_is_404_on_pages(outsider, team):
    certificate = Certificate.objects.create(team=team, name="theirs", dns_names=["a.test"], names_key="a.test")
    client = Client()
    client.force_login(outsider)
    assert b"theirs" not in client.get("/certificates/").content
    assert client.get(f"/certificates/{certificate.pk}/").status_code == 404
    assert client.post(f"/certificates/{certificate.pk}/delete").status_code == 404
    assert Certificate.objects.filter(pk=certificate.pk).exists()


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_person_requests_a_certificate_in_chromium_and_watches_it_verify(
    chromium, live_server, plain_http_cookies, owner, zones, dns_server, pebble, use_ca, celery_worker
):
    use_ca(pebble)
    chromium.delete_all_cookies()
    chromium.get(f"{live_server.url}/login/")
    chromium.find_element(By.NAME, "username").send_keys("owner")
    chromium.find_element(By.NAME, "password").send_keys("correct horse 42!")
    submit(chromium, chromium.find_element(By.TAG_NAME, "form"))
    chromium.get(f"{live_server.url}/certificates/")
    form = chromium.find_element(By.ID, "certificate-create")
    form.find_element(By.NAME, "name").send_keys("from-the-browser")
    form.find_element(By.CSS_SELECTOR, "input[value='alpha.test']").click()
    form.find_element(By.CSS_SELECTOR, "input[value='*.alpha.test']").click()
    submit(chromium, form)
    assert chromium.find_element(By.TAG_NAME, "h1").text == "from-the-browser"
    # The page refreshes itself every two seconds until the issuance is done.
    WebDriverWait(chromium, 30).until(lambda d: d.find_element(By.ID, "state").text == "verified")
    assert "✓ Downloading the certificate" in chromium.find_element(By.ID, "steps").text
    assert len(chromium.find_elements(By.CSS_SELECTOR, "#versions tbody tr td code")) == 1
    assert "PRIVATE KEY" not in chromium.page_source
