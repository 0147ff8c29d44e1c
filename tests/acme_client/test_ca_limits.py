"""The CA's rate limits are counted per account before a request is sent (acme_client/limits.py)."""

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from acme_client import limits
from acme_client.models import AcmeAccount, LimitUse

pytestmark = pytest.mark.django_db


@pytest.fixture
def account():
    return AcmeAccount.objects.create(directory_url="https://ca.test/dir", key_pem="unused")


def spend(account, names, *, renewal=False, exempt=False, now=None):
    limits.spend_new_order(account, names, renewal=renewal, exempt=exempt, now=now)


def test_new_orders_stop_at_the_limit_and_free_up_as_the_window_slides(account, settings):
    settings.CERTHUB_CA_LIMITS = {"new_orders": (3, 3600)}
    start = timezone.now()
    for i in range(3):
        spend(account, [f"n{i}.example.com"], now=start + timedelta(minutes=i))
    with pytest.raises(limits.LimitReached) as refused:
        spend(account, ["n3.example.com"], now=start + timedelta(minutes=10))
    assert refused.value.limit.name == limits.NEW_ORDERS
    assert refused.value.frees_at == start + timedelta(hours=1)  # when the oldest use leaves the window
    assert "limit of 3 new orders for all of CertHub's customers per hour" in str(refused.value)
    spend(account, ["n3.example.com"], now=start + timedelta(hours=1, seconds=1))
    assert LimitUse.objects.filter(limit=limits.NEW_ORDERS).count() == 4


def test_certificates_are_counted_per_registered_domain_by_the_public_suffix_list(account, settings):
    settings.CERTHUB_CA_LIMITS = {"certificates_per_domain": (2, 86400)}
    spend(account, ["www.example.co.uk"])
    spend(account, ["*.shop.example.co.uk", "shop.example.co.uk"])
    spend(account, ["www.other.co.uk"])  # another registered domain
    with pytest.raises(limits.LimitReached) as refused:
        spend(account, ["api.example.co.uk"])
    assert refused.value.key == "example.co.uk" and "(example.co.uk)" in str(refused.value)


def test_the_same_set_of_names_is_limited_whatever_their_order_or_case(account, settings):
    settings.CERTHUB_CA_LIMITS = {"certificates_per_exact_set": (2, 86400)}
    spend(account, ["a.example.com", "b.example.com"])
    spend(account, ["B.example.com", "a.example.com"])
    spend(account, ["a.example.com"])  # another set
    with pytest.raises(limits.LimitReached):
        spend(account, ["b.example.com", "a.example.com"])


def test_renewals_leave_the_reserve_to_customers_and_ari_renewals_are_exempt(account, settings):
    settings.CERTHUB_CA_LIMITS = {"new_orders": (10, 3600)}
    settings.CERTHUB_CA_CUSTOMER_RESERVE = 0.2
    for i in range(8):
        spend(account, [f"r{i}.example.com"], renewal=True)
    with pytest.raises(limits.LimitReached):
        spend(account, ["r8.example.com"], renewal=True)
    spend(account, ["c1.example.com"])  # a customer's own request still goes
    spend(account, ["c2.example.com"])
    with pytest.raises(limits.LimitReached):
        spend(account, ["c3.example.com"])
    spend(account, ["r9.example.com"], renewal=True, exempt=True)  # names what it replaces: not counted
    assert LimitUse.objects.filter(limit=limits.NEW_ORDERS).count() == 10


def test_failed_validations_hold_back_orders_for_that_name_only(account, settings):
    settings.CERTHUB_CA_LIMITS = {"failed_authorizations": (2, 3600)}
    now = timezone.now()
    for _ in range(2):
        limits.failed_authorization(account, "Broken.example.com", now=now)
    with pytest.raises(limits.LimitReached) as refused:
        spend(account, ["ok.example.com", "broken.example.com"], exempt=True)  # exempt from all but this
    assert refused.value.limit.name == limits.FAILED_AUTHORIZATIONS
    spend(account, ["ok.example.com"])


def test_a_rate_limited_answer_pauses_new_orders_until_its_retry_after(account):
    until = limits.paused_by_ca(account, 120)
    with pytest.raises(limits.LimitReached) as refused:
        spend(account, ["p.example.com"], exempt=True)
    assert refused.value.frees_at == until
    spend(account, ["p.example.com"], now=until + timedelta(seconds=1))


def test_a_customer_check_counts_nothing(account, settings):
    settings.CERTHUB_CA_LIMITS = {"certificates_per_exact_set": (1, 86400)}
    limits.check(account, ["x.example.com"], limits=(limits.EXACT_SET,))
    spend(account, ["x.example.com"])
    with pytest.raises(limits.LimitReached):
        limits.check(account, ["x.example.com"], limits=(limits.EXACT_SET,))


@pytest.mark.django_db(transaction=True)
def test_workers_spending_at_once_never_pass_the_limit_between_them(account, settings):
    settings.CERTHUB_CA_LIMITS = {"new_orders": (5, 3600)}
    outcomes = []

    def worker(i):
        try:
            spend(account, [f"w{i}.example.com"])
            outcomes.append("sent")
        except limits.LimitReached:
            outcomes.append("held")
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count("sent") == 5 and outcomes.count("held") == 7
    assert LimitUse.objects.filter(limit=limits.NEW_ORDERS).count() == 5


def test_uses_older_than_the_longest_window_are_pruned(account):
    now = timezone.now()
    LimitUse.objects.create(account=account, limit=limits.NEW_ORDERS, at=now - timedelta(days=8))
    LimitUse.objects.create(account=account, limit=limits.PER_DOMAIN, key="example.com", at=now - timedelta(days=6))
    assert limits.prune(now) == 1
    assert LimitUse.objects.count() == 1
