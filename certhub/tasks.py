"""Celery tasks of the outbox: thin, idempotent; certhub.outbox does the work."""

import logging

from celery import shared_task

log = logging.getLogger(__name__)


@shared_task(acks_late=True, ignore_result=True)
def relay_outbox() -> int:
    """Deliver unhandled events to the local handlers, then publish to Redis (on commit and from beat)."""
    from certhub import outbox

    try:
        outbox.dispatch()
    except Exception:
        # The events stay unhandled and are tried again at the next run; Redis consumers need not wait.
        log.exception("outbox dispatch failed; will retry")
    return outbox.relay()


@shared_task(acks_late=True, ignore_result=True)
def prune_outbox() -> int:
    """Delete delivered events past their retention (beat, daily)."""
    from certhub import outbox

    return outbox.prune()
