"""API tokens: Bearer authentication, scopes, revocation, hashed storage, the CLI."""

from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from certhub.models import ApiToken, Team

pytestmark = pytest.mark.django_db


def test_missing_or_unknown_token_is_401_in_digitalocean_shape():
    for headers in ({}, {"HTTP_AUTHORIZATION": "Bearer chp_nope"}, {"HTTP_AUTHORIZATION": "Bearer"}):
        r = APIClient().get("/v2/domains", **headers)
        assert r.status_code == 401
        assert r.json() == {"id": "unauthorized", "message": "Unable to authenticate you."}
        assert r["WWW-Authenticate"].startswith("Bearer")


def test_read_scope_reads_but_cannot_write(read_only_api):
    assert read_only_api.get("/v2/domains").status_code == 200
    r = read_only_api.post("/v2/domains", {"name": "x.test"}, format="json")
    assert r.status_code == 403 and r.json()["id"] == "forbidden"


def test_revoked_token_is_refused(team):
    token, plaintext = ApiToken.issue(team=team, scopes=["read"])
    client = APIClient(HTTP_AUTHORIZATION=f"Bearer {plaintext}")
    assert client.get("/v2/domains").status_code == 200
    token.revoke()
    assert client.get("/v2/domains").status_code == 401


def test_token_is_stored_only_as_a_hash_and_records_last_use(team):
    token, plaintext = ApiToken.issue(team=team, scopes=["read", "write"])
    stored = ApiToken.objects.values().get(pk=token.pk)
    assert plaintext not in str(stored)
    assert stored["token_hash"] == ApiToken.hash(plaintext)
    assert stored["last_used_at"] is None
    APIClient(HTTP_AUTHORIZATION=f"Bearer {plaintext}").get("/v2/domains")
    token.refresh_from_db()
    assert token.last_used_at is not None


def test_create_api_token_command_prints_the_token_alone():
    out = StringIO()
    call_command("create_api_token", "--team", "ops", "--create-team", "--scopes", "read", stdout=out)
    plaintext = out.getvalue().strip()
    assert "\n" not in plaintext and plaintext.startswith("chp_")
    token = ApiToken.objects.get(token_hash=ApiToken.hash(plaintext))
    assert token.team == Team.objects.get(name="ops") and token.scopes == ["read"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--team", "nobody"], "no team named"),
        (["--team", "ops", "--create-team", "--scopes", "admin"], "unknown scope"),
    ],
)
def test_create_api_token_command_rejects_bad_arguments(args, message):
    with pytest.raises(CommandError, match=message):
        call_command("create_api_token", *args)
    assert not ApiToken.objects.exists()
