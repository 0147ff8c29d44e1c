"""Celery tasks of the ACME client: housekeeping only (the issuance workflow drives the protocol)."""

from celery import shared_task


@shared_task(acks_late=True, ignore_result=True)
def prune_limit_uses() -> int:
    """Forget rate-limit uses older than the longest window (daily, from beat)."""
    from acme_client import limits

    return limits.prune()
