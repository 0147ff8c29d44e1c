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
