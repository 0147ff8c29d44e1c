"""Personas and API clients shared by every test.

The owner and the teammate belong to team "acme"; the outsider belongs to "globex" and must
never see acme's objects.
"""

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from certhub.models import ApiToken, Membership, Team


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
