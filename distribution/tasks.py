"""Celery tasks: thin, idempotent; the outbox module does the work."""

from celery import shared_task


@shared_task(acks_late=True, ignore_result=True)
def relay_outbox() -> int:
    """Publish the unpublished outbox events (on commit after recording, and from beat)."""
    from distribution import outbox

    return outbox.relay()


@shared_task(acks_late=True, ignore_result=True)
def prune_outbox() -> int:
    """Delete published events past their retention (beat, daily)."""
    from distribution import outbox

    return outbox.prune()
