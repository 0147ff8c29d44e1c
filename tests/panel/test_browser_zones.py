"""A person signs in with a real browser, adds a zone and a record, and sees them."""

import pytest
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from dns_zones.models import Record

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def submit(driver, form) -> None:
    """Click the form's button and wait for the next page, so no element of the old one is used."""
    form.find_element(By.CSS_SELECTOR, "button").click()
    WebDriverWait(driver, 10).until(lambda _: is_gone(form))


def is_gone(element) -> bool:
    """True once the element's page has been replaced."""
    try:
        element.is_enabled()
    except StaleElementReferenceException:
        return True
    except WebDriverException as e:
        # Mid-navigation, chromedriver may report a node of the old page this way instead.
        if "does not belong to the document" in (e.msg or ""):
            return True
        raise
    return False


def test_sign_in_add_zone_and_record_in_chromium(chromium, live_server, owner, plain_http_cookies):
    chromium.delete_all_cookies()
    chromium.get(f"{live_server.url}/zones/")
    assert "/login/" in chromium.current_url
    chromium.find_element(By.NAME, "username").send_keys("owner")
    chromium.find_element(By.NAME, "password").send_keys("correct horse 42!")
    submit(chromium, chromium.find_element(By.TAG_NAME, "form"))
    assert chromium.find_element(By.TAG_NAME, "h1").text == "DNS zones"

    form = chromium.find_element(By.ID, "zone-create")
    form.find_element(By.NAME, "name").send_keys("browser.test")
    submit(chromium, form)
    assert chromium.find_element(By.TAG_NAME, "h1").text == "browser.test"
    assert "Zone browser.test created." in chromium.page_source

    form = chromium.find_element(By.ID, "record-create")
    Select(form.find_element(By.NAME, "type")).select_by_value("A")
    name = form.find_element(By.NAME, "name")
    name.clear()
    name.send_keys("www")
    form.find_element(By.NAME, "data").send_keys("not-an-address")
    submit(chromium, form)
    assert "must be an IPv4 address" in chromium.page_source

    form = chromium.find_element(By.ID, "record-create")
    data = form.find_element(By.NAME, "data")
    data.clear()
    data.send_keys("192.0.2.44")
    submit(chromium, form)
    rows = chromium.find_elements(By.CSS_SELECTOR, "#records tbody tr")
    assert any("192.0.2.44" in row.text and row.text.startswith("A www") for row in rows)
    assert Record.objects.filter(zone__name="browser.test", type="A", name="www", data="192.0.2.44").exists()
