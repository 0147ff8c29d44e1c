"""The CA's rate limits, kept per ACME account before a request is sent rather than learnt from refusals.

With one account for every customer, a limit the CA enforces stops every team at once; so each use
is counted here first, in a sliding window (never looser than the CA's token buckets, which refill
gradually over the same window). Let's Encrypt's published numbers are the defaults
(`CERTHUB_CA_LIMITS` overrides them):

- new orders per account: 300 per 3 hours;
- certificates per registered domain (by the Public Suffix List): 50 per 7 days;
- certificates for the same exact set of names: 5 per 7 days;
- failed authorizations per name: 5 per hour.

A renewal that names the certificate it replaces (ARI, RFC 9773) is exempt from the first three, as
Let's Encrypt exempts it. Renewals leave `CERTHUB_CA_CUSTOMER_RESERVE` of the new-order budget to
customers' own requests. An order and the certificate it should bring are counted when the order is
sent (a failed order still costs its certificate tokens: the conservative side).
"""

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from publicsuffixlist import PublicSuffixList

from acme_client.models import AcmeAccount, LimitUse

NEW_ORDERS = "new_orders"
PER_DOMAIN = "certificates_per_domain"
EXACT_SET = "certificates_per_exact_set"
FAILED_AUTHORIZATIONS = "failed_authorizations"

_psl = PublicSuffixList()


@dataclass(frozen=True)
class Limit:
    name: str
    count: int
    window: timedelta
    words: str  # "{count} new orders per {window}"


DEFAULTS = {
    NEW_ORDERS: (300, 3 * 3600, "new orders for all of CertHub's customers"),
    PER_DOMAIN: (50, 7 * 86400, "certificates per registered domain"),
    EXACT_SET: (5, 7 * 86400, "certificates for the same set of names"),
    FAILED_AUTHORIZATIONS: (5, 3600, "failed validations per name"),
}


def limit(name: str) -> Limit:
    count, seconds, words = DEFAULTS[name]
    count, seconds = settings.CERTHUB_CA_LIMITS.get(name, (count, seconds))
    return Limit(name, count, timedelta(seconds=seconds), words)


class LimitReached(Exception):
    """A request would exceed one of the CA's limits; it may be sent at `frees_at`."""

    def __init__(self, limit: Limit, key: str, frees_at: datetime) -> None:
        self.limit, self.key, self.frees_at = limit, key, frees_at
        subject = f" ({key})" if key and limit.name != EXACT_SET else ""
        super().__init__(
            f"the CA's limit of {limit.count} {limit.words} per {_duration(limit.window)}{subject} is reached; "
            f"it frees up at {frees_at:%Y-%m-%d %H:%M} UTC"
        )


def registered_domain(name: str) -> str:
    """The registered domain of a DNS name (`example.co.uk` for `*.www.example.co.uk`)."""
    return _psl.privatesuffix(name.removeprefix("*.")) or name.removeprefix("*.")


def names_set_key(names: list[str]) -> str:
    return hashlib.sha256(",".join(sorted(n.lower() for n in names)).encode()).hexdigest()


def _checks(names: list[str], *, exempt: bool) -> list[tuple[str, str]]:
    """(limit, key) pairs a new order for these names uses."""
    checks = [(FAILED_AUTHORIZATIONS, n.lower()) for n in sorted(set(names))]
    if not exempt:
        checks = [
            (NEW_ORDERS, ""),
            *((PER_DOMAIN, d) for d in sorted({registered_domain(n) for n in names})),
            (EXACT_SET, names_set_key(names)),
            *checks,
        ]
    return checks


def _frees_at(account: AcmeAccount, name: str, key: str, allowed: int, now: datetime) -> datetime | None:
    """When the window holds fewer than `allowed` uses again; None if it does already."""
    window = limit(name).window
    uses = list(
        LimitUse.objects.filter(account=account, limit=name, key=key, at__gt=now - window)
        .order_by("at")
        .values_list("at", flat=True)
    )
    if len(uses) < allowed:
        return None
    return uses[len(uses) - allowed] + window if allowed > 0 else now + window


def check(account: AcmeAccount, names: list[str], *, limits: tuple[str, ...], now: datetime | None = None) -> None:
    """Raise LimitReached if a certificate for these names would exceed one of `limits` now."""
    now = now or timezone.now()
    for name, key in _checks(names, exempt=False):
        if name in limits:
            frees_at = _frees_at(account, name, key, limit(name).count, now)
            if frees_at:
                raise LimitReached(limit(name), key, frees_at)


def spend_new_order(
    account: AcmeAccount, names: list[str], *, renewal: bool, exempt: bool, now: datetime | None = None
) -> None:
    """Count a new order for `names` (and the certificate it should bring), or raise LimitReached.

    Under the account's row lock, so workers counting at once never pass the limit between them.
    """
    now = now or timezone.now()
    with transaction.atomic():
        locked = AcmeAccount.objects.select_for_update().get(pk=account.pk)
        if locked.orders_paused_until and locked.orders_paused_until > now:
            raise LimitReached(limit(NEW_ORDERS), "the CA asked us to wait", locked.orders_paused_until)
        checks = _checks(names, exempt=exempt)
        for name, key in checks:
            allowed = limit(name).count
            if name == NEW_ORDERS and renewal:
                allowed -= int(allowed * settings.CERTHUB_CA_CUSTOMER_RESERVE)
            frees_at = _frees_at(locked, name, key, allowed, now)
            if frees_at:
                raise LimitReached(limit(name), key, frees_at)
        LimitUse.objects.bulk_create(
            LimitUse(account=locked, limit=name, key=key, at=now)
            for name, key in checks
            if name != FAILED_AUTHORIZATIONS
        )


def failed_authorization(account: AcmeAccount, name: str, now: datetime | None = None) -> None:
    LimitUse.objects.create(account=account, limit=FAILED_AUTHORIZATIONS, key=name.lower(), at=now or timezone.now())


def paused_by_ca(account: AcmeAccount, retry_after: float | None, now: datetime | None = None) -> datetime:
    """The CA answered rateLimited: send no new order before its Retry-After (an hour when it gives none)."""
    until = (now or timezone.now()) + timedelta(seconds=retry_after if retry_after else 3600)
    AcmeAccount.objects.filter(pk=account.pk).update(orders_paused_until=until)
    return until


def prune(now: datetime | None = None) -> int:
    """Forget uses older than the longest window."""
    longest = max(limit(name).window for name in DEFAULTS)
    deleted, _ = LimitUse.objects.filter(at__lt=(now or timezone.now()) - longest).delete()
    return deleted


def _duration(window: timedelta) -> str:
    seconds = int(window.total_seconds())
    if seconds % 86400 == 0:
        days = seconds // 86400
        return f"{days} days" if days > 1 else "day"
    if seconds % 3600 == 0:
        hours = seconds // 3600
        return f"{hours} hours" if hours > 1 else "hour"
    return f"{seconds} seconds"
