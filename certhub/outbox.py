"""Record events in the caller's transaction; deliver them to local handlers and a Redis Stream.

Two deliveries, each at least once and in seq order:
- `dispatch()` runs this project's own handlers (CERTHUB_OUTBOX_HANDLERS, dotted paths) in the
  transaction that marks the events handled, so what a handler writes commits with the mark.
  It needs no Redis: it is how the embedded default delivers too.
- `relay()` publishes to the event's Redis Stream for outside consumers; an event is marked
  published only after Redis accepted it, so a crash between the two publishes it again, with
  the same event_id. Without REDIS_URL events stay unpublished (said once a process) until
  CertHub is pointed at a Redis.
One run of each at a time: the undelivered rows are locked for the batch. Rows are numbered at
insert and may commit out of that order; events of one subject stay in order because the
services that change a subject hold its row lock while recording.
"""

import functools
import json
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import redis
from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.module_loading import import_string
from redis.backoff import NoBackoff
from redis.retry import Retry

from certhub.models import OutboxEvent

log = logging.getLogger(__name__)

# Approximate trimming (MAXLEN ~): about 500 bytes an entry, so ~500 MB at most; at 20,000
# renewals a day a consumer group may lag weeks behind before entries go unread.
STREAM_MAXLEN = 1_000_000
# Set with every publication. Missing while published events exist means Redis lost its data
# (FLUSHDB, a restart without persistence): what it lost is published again.
SENTINEL = "certhub.outbox.published"

_warned_no_redis = False


def record(*, stream: str, kind: str, team_id: int, subject_id: Any, payload: dict) -> OutboxEvent:
    """Write an event in the caller's open transaction; the caller builds `payload` from public fields."""
    if not transaction.get_connection().in_atomic_block:
        # Outside a transaction the event could commit without the change, or the change without it.
        raise RuntimeError("outbox events must be recorded inside the transaction that makes the change")
    return OutboxEvent.objects.create(
        stream=stream, kind=kind, team_id=team_id, subject_id=str(subject_id), payload=payload
    )


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


@functools.cache
def _handlers(paths: tuple[str, ...]) -> list[Callable[[list[OutboxEvent]], None]]:
    return [import_string(path) for path in paths]


def dispatch(batch: int = 200) -> int:
    """Run the local handlers for unhandled events in seq order; return how many were handled.

    Each handler gets a batch (a list, in seq order) so it can do its work in a few queries.

    A handler that raises leaves its event (and those after it) for the next run; what the
    handlers wrote for that batch rolls back with it.
    """
    handlers = _handlers(tuple(settings.CERTHUB_OUTBOX_HANDLERS))
    handled = 0
    while True:
        with transaction.atomic():
            events = list(
                OutboxEvent.objects.select_for_update().filter(handled_at__isnull=True).order_by("seq")[:batch]
            )
            if events:
                for handler in handlers:
                    handler(events)
                OutboxEvent.objects.filter(seq__in=[e.seq for e in events]).update(handled_at=timezone.now())
        handled += len(events)
        if len(events) < batch:
            return handled


def relay(batch: int = 500, *, client: redis.Redis | None = None, stream: str | None = None) -> int:
    """Publish unpublished events in seq order, `batch` per transaction; return how many went out.

    Each event goes to its own stream, or all to `stream` when given (tests use a stream of their
    own). Stop at the first Redis error, leaving that event and the rest for the next run.
    """
    if client is None:
        client = redis_client()
    if client is None:
        _warn_no_redis()
        return 0
    _replay_if_reset(client)
    published = 0
    while True:
        count, complete = _relay_batch(client, stream, batch)
        published += count
        if not complete or count < batch:
            return published


def _relay_batch(client: redis.Redis, stream: str | None, batch: int) -> tuple[int, bool]:
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
            pipe.xadd(stream or event.stream, _fields(event), maxlen=STREAM_MAXLEN, approximate=True)
        pipe.set(SENTINEL, "1")
        try:
            results = pipe.execute(raise_on_error=False)
        except redis.RedisError as e:
            log.warning("outbox relay: Redis failed, %d events left unpublished: %s", len(events), e)
            return 0, False
        # An error while executing (rare: the key is not a stream) fails the rest alike; keep the prefix.
        results = results[: len(events)]  # the sentinel's answer last
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


def replay(*, since: datetime | None = None) -> int:
    """Publish again every event still kept (created at or after `since`); return how many.

    The relay sends them with their own event_id, in seq order; consumers drop what they had.
    """
    events = OutboxEvent.objects.filter(published_at__isnull=False)
    if since is not None:
        events = events.filter(created_at__gte=since)
    return events.update(published_at=None)


def _replay_if_reset(client: redis.Redis) -> None:
    try:
        if client.exists(SENTINEL):
            return
    except redis.RedisError:
        return  # the relay finds Redis down itself
    replayed = replay()
    if replayed:
        log.warning("outbox relay: Redis lost its data; publishing %d kept events again", replayed)


def prune(*, batch: int = 5000, now: datetime | None = None) -> int:
    """Delete published and handled events older than CERTHUB_OUTBOX_RETENTION_DAYS; return how many.

    Events still owed to a delivery are never pruned. Batches of `batch` rows (a range on the
    published_at index) keep each DELETE's locks short.
    """
    cutoff = (now or timezone.now()) - timedelta(days=settings.CERTHUB_OUTBOX_RETENTION_DAYS)
    old = OutboxEvent.objects.filter(published_at__lt=cutoff, handled_at__isnull=False).order_by("published_at", "seq")
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
        "subject_id": event.subject_id,
        "payload": json.dumps(event.payload, separators=(",", ":")),
    }


def _warn_no_redis() -> None:
    global _warned_no_redis
    if not _warned_no_redis:
        _warned_no_redis = True
        log.warning("outbox relay: REDIS_URL is not set, events stay unpublished until it is")
