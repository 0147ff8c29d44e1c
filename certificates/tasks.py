"""Celery tasks: thin, idempotent, taking ids; the services do the work."""

import logging

from celery import shared_task
from django.conf import settings

# Delays longer than this are left to the resume sweep rather than held as ETA tasks.
LONGEST_COUNTDOWN = 60


@shared_task(acks_late=True, ignore_result=True)
def advance_issuance(issuance_id: int) -> None:
    from certificates.issuance import advance

    delay = advance(issuance_id)
    if delay is not None and delay <= LONGEST_COUNTDOWN:
        advance_issuance.apply_async((issuance_id,), countdown=delay or None)


@shared_task(acks_late=True, ignore_result=True)
def resume_issuances() -> int:
    """Queue every issuance whose next step is due: after long delays, lost tasks or killed workers."""
    from django.utils import timezone

    from certificates.models import Issuance

    due = Issuance.objects.filter(next_attempt_at__lte=timezone.now()).exclude(
        step__in=[Issuance.Step.DONE, Issuance.Step.FAILED]
    )
    ids = list(due.values_list("pk", flat=True)[: settings.CERTHUB_RESUME_BATCH])
    for issuance_id in ids:
        advance_issuance.delay(issuance_id)
    return len(ids)


@shared_task(acks_late=True, ignore_result=True)
def renewal_sweep() -> int:
    """Queue the renewal of every certificate whose renewal time has come (beat, every 4 hours)."""
    from acme_client import accounts
    from certificates import renewal

    try:
        # First, so a window the CA moved earlier is honoured by this very sweep.
        renewal.ari_refresh(accounts.session())
    except Exception:  # ARI is advisory: a CA without it, or down, must not stop renewals
        logging.getLogger(__name__).warning("renewal information not refreshed", exc_info=True)
    queued = renewal.renewal_sweep()
    return queued


@shared_task(acks_late=True, ignore_result=True)
def notification_sweep() -> int:
    """Email teams about renewals failing for a day and certificates about to expire."""
    from certificates import notifications

    return notifications.notification_sweep()


# A revocation the CA cannot take now is tried again this many times, the delay doubling up to
# LONGEST_COUNTDOWN (about an hour in all), then noted as failed on the version.
REVOKE_ATTEMPTS = 64


@shared_task(acks_late=True, ignore_result=True, bind=True, max_retries=None)
def revoke_version(self, version_id: int) -> None:
    """Revoke a certificate version at its CA (the revoke action), retrying while the CA cannot take it."""
    from acme_client.protocol import AcmeError
    from certificates import services

    try:
        services.certificate_version_revoke(version_id=version_id)
    except AcmeError as e:  # only what trying again can help: the service notes refusals
        attempt = self.request.retries + 1
        if attempt >= REVOKE_ATTEMPTS:
            # Its own words may name internal hosts: those stay in the log.
            logging.getLogger(__name__).warning("revocation of version %s given up: %s", version_id, e)
            error = f"the CA could not take the revocation ({e.problem_type or 'no answer'}, {attempt} attempts)"
            services.certificate_revocation_failed(version_id=version_id, error=error)
            return
        delay = min(max(2.0**attempt, e.retry_after or 0), LONGEST_COUNTDOWN)
        raise self.retry(countdown=delay) from e
