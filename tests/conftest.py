"""Personas and API clients shared by every test.

The owner and the teammate belong to team "acme"; the outsider belongs to "globex" and must
never see acme's objects.
"""

import shutil
import tempfile

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from rest_framework.test import APIClient
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from certhub.models import ApiToken, Membership, Team
from tests.support.acme import *  # noqa: F403 (Pebble, DNS server and Celery worker fixtures, one of each per session)


def _member(team: Team, username: str):
    user = get_user_model().objects.create_user(username, f"{username}@example.test", "correct horse 42!")
    Membership.objects.create(team=team, user=user)
    return user


@pytest.fixture
def team(db) -> Team:
    return Team.objects.create(name="acme")


@pytest.fixture
def other_team(db) -> Team:
    return Team.objects.create(name="globex")


@pytest.fixture
def owner(team):
    return _member(team, "owner")


@pytest.fixture
def teammate(team):
    return _member(team, "teammate")


@pytest.fixture
def outsider(other_team):
    return _member(other_team, "outsider")


@pytest.fixture
def browser(owner) -> Client:
    """A Django test client signed in as the owner."""
    client = Client()
    client.force_login(owner)
    return client


def token_client(team: Team, scopes: list[str]) -> APIClient:
    _, plaintext = ApiToken.issue(team=team, scopes=scopes)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {plaintext}")
    return client


@pytest.fixture
def api(team) -> APIClient:
    """The owner's team, with a read and write token."""
    return token_client(team, ["read", "write"])


@pytest.fixture
def read_only_api(team) -> APIClient:
    return token_client(team, ["read"])


@pytest.fixture
def outsider_api(other_team) -> APIClient:
    return token_client(other_team, ["read", "write"])


# A real headless Chromium driven by Selenium against the live test server.
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


@pytest.fixture(scope="session")
def chromium():
    profile = tempfile.mkdtemp(prefix="certhub-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    # Without the background-networking flags Chromium keeps dialling out of a closed network.
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--window-size=1280,900", f"--user-data-dir={profile}",
    ):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.implicitly_wait(3)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def plain_http_cookies(settings):
    """The live server speaks plain HTTP: let the session and CSRF cookies travel on it."""
    settings.SESSION_COOKIE_SECURE = False
    settings.CSRF_COOKIE_SECURE = False
