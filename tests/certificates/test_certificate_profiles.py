"""A certificate may ask for one of the CA's profiles (classic, tlsserver, shortlived); renewal
follows the lifetime actually issued."""

import json
from datetime import UTC, datetime, timedelta

import pytest

from acme_client import accounts
from certificates.models import Certificate, Issuance
from certificates.renewal import lifetime_renewal_time
from tests.support.stub_ca import StubCA

pytestmark = pytest.mark.django_db


@pytest.fixture
def ca(settings):
    """A CA whose directory offers profiles (Debian's Pebble offers none)."""
    stub = StubCA()
    directory = {
        "newNonce": f"{stub.url}/nonce",
        "newAccount": f"{stub.url}/account",
        "newOrder": f"{stub.url}/order",
        "meta": {"profiles": {"classic": "90 days", "tlsserver": "45 days", "shortlived": "6 days"}},
    }
    stub.route("GET", "/dir", body=directory)
    stub.route("HEAD", "/nonce")
    stub.route("POST", "/account", 201, {"status": "valid"}, headers={"Location": f"{stub.url}/acct/1"})
    settings.ACME_DIRECTORY_URL, settings.ACME_CA_BUNDLE = f"{stub.url}/dir", ""
    accounts.forget_sessions()
    yield stub
    stub.stop()
    accounts.forget_sessions()


def create(api, **extra):
    body = {"name": "p", "type": "lets_encrypt", "dns_names": ["www.alpha.test"], **extra}
    return api.post("/v2/certificates", body, format="json")


def test_a_profile_the_ca_offers_is_kept_and_asked_for(api, zones, ca):
    r = create(api, profile="shortlived")
    assert r.status_code == 201, r.content
    assert r.json()["certificate"]["profile"] == "shortlived"
    assert Issuance.objects.get(certificate_id=r.json()["certificate"]["id"]).profile == "shortlived"


def test_an_unknown_profile_is_refused_with_the_ones_offered_and_nothing_is_stored(api, zones, ca):
    r = create(api, profile="forever")
    assert r.status_code == 422
    assert r.json()["message"] == "profile: must be one of the CA's profiles: classic, shortlived, tlsserver"
    assert not Certificate.objects.exists()


def test_a_profile_is_refused_when_the_ca_offers_none(api, zones, ca):
    directory = json.loads(ca.routes[("GET", "/dir")][2])
    del directory["meta"]
    ca.route("GET", "/dir", body=directory)
    accounts.forget_sessions()
    r = create(api, profile="classic")
    assert r.status_code == 422 and "offers no profiles" in r.json()["message"]
    assert create(api).status_code == 201  # no profile: the CA's default


def test_the_profile_can_be_changed_for_the_next_renewal(api, zones, ca):
    certificate_id = create(api).json()["certificate"]["id"]
    r = api.patch(f"/v2/certificates/{certificate_id}", {"profile": "tlsserver"}, format="json")
    assert r.status_code == 200 and r.json()["certificate"]["profile"] == "tlsserver"
    bad = api.patch(f"/v2/certificates/{certificate_id}", {"profile": "x"}, format="json")
    assert bad.status_code == 422
    assert Certificate.objects.get(pk=certificate_id).profile == "tlsserver"


@pytest.mark.parametrize(
    ("fraction", "lifetime", "renew_after"),
    [(1 / 3, timedelta(days=90), timedelta(days=30)), (1 / 3, timedelta(days=45), timedelta(days=15)),
     (1 / 3, timedelta(days=6), timedelta(days=2)), (0.6, timedelta(days=90), timedelta(days=54)),
     (0.6, timedelta(days=6), timedelta(days=3)), (0.6, timedelta(hours=160), timedelta(hours=80))],
)  # fmt: skip
def test_renewal_follows_the_lifetime_issued_and_short_lived_ones_renew_by_half_life(
    settings, fraction, lifetime, renew_after
):
    settings.CERTHUB_RENEWAL_FRACTION = fraction
    not_before = datetime(2026, 12, 1, tzinfo=UTC)
    assert lifetime_renewal_time(not_before, not_before + lifetime) == not_before + renew_after
