"""What the hosted-zone DNS provider expects of run_dns."""

import pytest

from dns_zones.providers.hosted import NOTIFIED_DELAY, HostedZoneProvider

pytestmark = pytest.mark.django_db


def test_challenges_are_checked_sooner_when_run_dns_is_notified(team, settings):
    settings.CERTHUB_DNS_RELOAD_INTERVAL = 0.25
    settings.CERTHUB_DNS_NOTIFY = [("127.0.0.1", 8053)]
    assert HostedZoneProvider(team).propagation_delay == NOTIFIED_DELAY < 0.25
    settings.CERTHUB_DNS_NOTIFY = []
    assert HostedZoneProvider(team).propagation_delay == 0.25
