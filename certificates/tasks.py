"""Celery tasks: thin, idempotent, taking ids; the services do the work."""

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
