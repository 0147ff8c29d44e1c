"""Renewal: when a version is due, the sweep that claims due certificates, and renew-now.

A certificate is due when `renew_at` has passed. Claiming sets `renew_at` to null in one
conditional UPDATE, so two sweeps (or a sweep and a renew-now) never renew it twice; the
new version sets it again, and a failed renewal sets a retry time.
"""

import logging
import random
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from acme_client.protocol import AcmeError, RenewalInfo
from certificates import notifications
from certificates.models import Certificate, CertificateVersion, Issuance, with_current_version

log = logging.getLogger(__name__)


# Below this lifetime (Let's Encrypt's 6-day `shortlived` profile) renew by half-life at the latest,
# as Let's Encrypt advises, whatever CERTHUB_RENEWAL_FRACTION says.
SHORT_LIFETIME = timedelta(days=10)


def lifetime_renewal_time(not_before: datetime, not_after: datetime) -> datetime:
    """Once CERTHUB_RENEWAL_FRACTION of the lifetime issued has elapsed (one third: day 30 of 90, day 15
    of 45, day 2 of 6), and for a short-lived certificate no later than half of it."""
    lifetime = not_after - not_before
    fraction = settings.CERTHUB_RENEWAL_FRACTION
    if lifetime < SHORT_LIFETIME:
        fraction = min(fraction, 0.5)
    return not_before + lifetime * fraction


def ari_renewal_time(info: RenewalInfo, *, now: datetime) -> datetime:
    """A random moment in the CA's suggested window (RFC 9773 4.2); at once if it has passed."""
    if info.end <= now:
        return now
    start = max(info.start, now)
    return start + (info.end - start) * random.random()


def renewal_claim(certificate_id, *, now: datetime, start_at: datetime | None = None, reason: str = "renew",
                  due_only: bool = True) -> Issuance | None:  # fmt: skip
    """Claim a certificate for renewal and open its issuance; None if it is not claimable."""
    from certificates.services import issuance_start

    with transaction.atomic():
        claim = Certificate.objects.filter(
            pk=certificate_id, type=Certificate.Type.LETS_ENCRYPT, renew_at__isnull=False
        )
        if due_only:
            claim = claim.filter(renew_at__lte=now)
        if not claim.update(renew_at=None):
            return None
        certificate = with_current_version(Certificate.objects).get(pk=certificate_id)
        replaces = certificate.current_version.ari_id if certificate.current_version else ""
        return issuance_start(certificate=certificate, reason=reason, replaces=replaces, now=now, start_at=start_at)


def renewal_sweep(*, now: datetime | None = None) -> int:
    """Queue every due certificate once, in (renew_at, id) order, staggered by RENEWAL_SPACING."""
    now = now or timezone.now()
    queued = 0
    after: tuple[datetime, object] | None = None
    while True:
        due = Certificate.objects.filter(renew_at__lte=now)
        if after is not None:
            due = due.filter(Q(renew_at__gt=after[0]) | Q(renew_at=after[0], id__gt=after[1]))
        rows = list(due.order_by("renew_at", "id").values_list("renew_at", "id")[: settings.CERTHUB_RENEWAL_BATCH])
        if not rows:
            return queued
        for _, certificate_id in rows:
            start_at = now + timedelta(seconds=settings.CERTHUB_RENEWAL_SPACING * queued)
            if renewal_claim(certificate_id, now=now, start_at=start_at):
                queued += 1
        after = rows[-1]


def renew_now(certificate: Certificate) -> Issuance | None:
    """Renew at once (the `renew` action); None while an issuance is already under way."""
    return renewal_claim(certificate.pk, now=timezone.now(), reason="renew_now", due_only=False)


def schedule_after_success(certificate: Certificate, version: CertificateVersion, info: RenewalInfo | None) -> None:
    """Set the new version's renewal time (ARI where offered) and clear any failure streak."""
    now = timezone.now()
    if info is not None:
        version.renew_at = ari_renewal_time(info, now=now)
        version.ari_retry_at = now + timedelta(seconds=info.retry_after or 6 * 3600)
    else:
        version.renew_at = lifetime_renewal_time(version.not_before, version.not_after)
    certificate.renew_at = version.renew_at
    certificate.renewal_failing_since = None
    certificate.renewal_failure_notified = False


def schedule_after_failure(certificate_id) -> None:
    """A renewal failed for good: try again later, within the remaining lifetime."""
    now = timezone.now()
    certificate = with_current_version(Certificate.objects).filter(pk=certificate_id).first()
    if certificate is None or certificate.current_version is None:
        return  # a first issuance that failed stays in error until the customer acts
    not_after = certificate.current_version.not_after
    if now >= not_after:
        # Expired while every renewal failed: stop retrying on our own (each retry is an order and,
        # where validation fails, a failed authorization the CA counts towards pausing the name for
        # the whole account), say so, and tell the team; "renew" tries again once the cause is fixed.
        reason = f"Expired because renewals kept failing: {certificate.last_error}. Fix the cause, then renew."
        Certificate.objects.filter(pk=certificate_id).update(
            renew_at=None, state=Certificate.State.ERROR, last_error=reason
        )
        transaction.on_commit(lambda: notifications.certificate_failed(certificate_id), robust=True)
        return
    latest = not_after - timedelta(hours=1)
    retry_at = max(
        now + timedelta(minutes=5), min(now + timedelta(seconds=settings.CERTHUB_RENEWAL_RETRY_SECONDS), latest)
    )
    Certificate.objects.filter(pk=certificate_id).update(renew_at=retry_at)
    Certificate.objects.filter(pk=certificate_id, renewal_failing_since__isnull=True).update(renewal_failing_since=now)


def ari_refresh(acme, *, now: datetime | None = None, batch: int = 500) -> int:
    """Re-read ACME Renewal Information for current versions whose Retry-After has passed."""
    now = now or timezone.now()
    refreshed = 0
    versions = (
        CertificateVersion.objects.filter(ari_retry_at__lte=now)
        .select_related("certificate")
        .defer("private_key_pem", "chain_pem")[:batch]
    )
    for version in versions:
        certificate = version.certificate
        if certificate.current_version_id != version.pk or certificate.renew_at is None:
            CertificateVersion.objects.filter(pk=version.pk).update(ari_retry_at=None)
            continue
        try:
            info = acme.renewal_info(version.leaf_pem)
        except AcmeError as e:
            log.warning("renewal info for %s not refreshed: %s", certificate.pk, e)
            continue
        if info is None:
            continue
        renew_at = ari_renewal_time(info, now=now) if info.start < version.renew_at else version.renew_at
        CertificateVersion.objects.filter(pk=version.pk).update(
            renew_at=renew_at, ari_retry_at=now + timedelta(seconds=info.retry_after or 6 * 3600)
        )
        Certificate.objects.filter(pk=certificate.pk, renew_at__isnull=False).update(renew_at=renew_at)
        refreshed += 1
    return refreshed
