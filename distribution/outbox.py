"""Record certificate events in the caller's transaction and relay them to a Redis Stream.

Delivery is at least once: an event is marked published only after Redis accepted it, so a
crash between the two publishes it again, with the same event_id. One relay publishes at a
time (the unpublished rows are locked for the batch), so the stream follows seq order. Rows
are numbered at insert and may commit out of that order; events of one certificate stay in
order because the services that change a certificate hold its row lock while recording.

Without REDIS_URL (the embedded default) the relay publishes nothing and leaves events
unpublished, so pointing CertHub at a Redis later delivers them all; it says so once a process.
"""

import functools
import json
import logging
from datetime import datetime, timedelta

import redis
from django.conf import settings
from django.db import transaction
from django.utils import timezone
from redis.backoff import NoBackoff
from redis.retry import Retry

from certificates.models import Certificate, CertificateVersion
from distribution.models import OutboxEvent

log = logging.getLogger(__name__)

STREAM = "certhub.certificates"
# Approximate trimming (MAXLEN ~): about 500 bytes an entry, so ~500 MB at most; at 20,000
# renewals a day a consumer group may lag weeks behind before entries go unread.
STREAM_MAXLEN = 1_000_000

_warned_no_redis = False


def record_event(
    *, kind: str, certificate: Certificate, version: CertificateVersion | None = None, reason: str = ""
) -> OutboxEvent:
    """Write an event about `certificate` in the caller's open transaction."""
    if not transaction.get_connection().in_atomic_block:
        # Outside a transaction the event could commit without the change, or the change without it.
        raise RuntimeError("record_event must run inside the transaction that makes the change")
    return OutboxEvent.objects.create(
        kind=OutboxEvent.Kind(kind),
        team_id=certificate.team_id,
        certificate_id=certificate.pk,
        payload=event_payload(certificate=certificate, version=version, reason=reason),
    )


def event_payload(*, certificate: Certificate, version: CertificateVersion | None, reason: str) -> dict:
    """Build a payload from named public fields only: never a key, never a whole model."""
    payload = {
        "certificate_id": str(certificate.pk),
        "team_id": certificate.team_id,
        "name": certificate.name,
        "dns_names": list(certificate.dns_names),
        "state": certificate.state,
        "version": None,
        "reason": reason,
    }
    if version is not None:
        payload["version"] = {
            # Consumers load the certificate and key by this id from the database, not from the event.
            "id": version.pk,
            "serial": version.serial,
            "not_before": version.not_before.isoformat(),
            "not_after": version.not_after.isoformat(),
            "sha1_fingerprint": version.sha1_fingerprint,
            "sha256_fingerprint": version.sha256_fingerprint,
            "key_type": version.key_type,
        }
    return payload


def redis_client() -> redis.Redis | None:
    """Return the shared client for settings.REDIS_URL, or None when there is no Redis."""
    return _client_for(settings.REDIS_URL) if settings.REDIS_URL else None


@functools.cache
def _client_for(url: str) -> redis.Redis:
    # Short timeouts and a single immediate retry (a pooled connection cut by a Redis restart):
    # the relay holds row locks while it talks to Redis, and the next run retries anyway.
    return redis.Redis.from_url(
        url,
        decode_responses=True,
        socket_connect_timeout=2,
        socket_timeout=5,
        retry=Retry(NoBackoff(), 1),
        health_check_interval=30,
    )


def relay(batch: int = 500, *, client: redis.Redis | None = None, stream: str = STREAM) -> int:
    """Publish unpublished events in seq order, `batch` per transaction; return how many went out.

    Stop at the first Redis error, leaving that event and the rest for the next run.
    """
    if client is None:
        client = redis_client()
    if client is None:
        _warn_no_redis()
        return 0
    published = 0
    while True:
        count, complete = _relay_batch(client, stream, batch)
        published += count
        if not complete or count < batch:
            return published


def _relay_batch(client: redis.Redis, stream: str, batch: int) -> tuple[int, bool]:
    """Publish one batch; return (published, whether every event of the batch went out)."""
    with transaction.atomic():
        # Waiting on these locks, not skipping them, keeps a single relay at a time (so seq order)
        # and lets a relay that was triggered during another one publish what that one missed.
        events = list(OutboxEvent.objects.select_for_update().filter(published_at__isnull=True).order_by("seq")[:batch])
        if not events:
            return 0, True
        # MULTI/EXEC: a command Redis refuses (out of memory, say) aborts the whole batch, so no
        # later event can land before an earlier one that failed.
        pipe = client.pipeline(transaction=True)
        for event in events:
            pipe.xadd(stream, _fields(event), maxlen=STREAM_MAXLEN, approximate=True)
        try:
            results = pipe.execute(raise_on_error=False)
        except redis.RedisError as e:
            log.warning("outbox relay: Redis failed, %d events left unpublished: %s", len(events), e)
            return 0, False
        # An error while executing (rare: the key is not a stream) fails the rest alike; keep the prefix.
        sent = 0
        for result in results:
            if isinstance(result, Exception):
                log.warning("outbox relay: Redis refused event %s: %s", events[sent].event_id, result)
                break
            sent += 1
        if sent:
            OutboxEvent.objects.filter(seq__in=[event.seq for event in events[:sent]]).update(
                published_at=timezone.now()
            )
        return sent, sent == len(events)


def prune(*, batch: int = 5000, now: datetime | None = None) -> int:
    """Delete published events older than CERTHUB_OUTBOX_RETENTION_DAYS; return how many.

    Unpublished events are never pruned: they are still owed to the stream. Batches of `batch`
    rows (a range on the published_at index) keep each DELETE's locks short.
    """
    cutoff = (now or timezone.now()) - timedelta(days=settings.CERTHUB_OUTBOX_RETENTION_DAYS)
    old = OutboxEvent.objects.filter(published_at__lt=cutoff).order_by("published_at", "seq")
    pruned = 0
    while True:
        seqs = list(old.values_list("seq", flat=True)[:batch])
        if not seqs:
            return pruned
        deleted, _ = OutboxEvent.objects.filter(seq__in=seqs).delete()
        pruned += deleted
        if len(seqs) < batch:
            return pruned


def _fields(event: OutboxEvent) -> dict[str, str]:
    return {
        "event_id": str(event.event_id),
        "kind": event.kind,
        "team_id": str(event.team_id),
        "certificate_id": str(event.certificate_id),
        "payload": json.dumps(event.payload, separators=(",", ":")),
    }


def _warn_no_redis() -> None:
    global _warned_no_redis
    if not _warned_no_redis:
        _warned_no_redis = True
        log.warning("outbox relay: REDIS_URL is not set, events stay unpublished until it is")
