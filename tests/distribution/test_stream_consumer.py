"""Consumer groups read relayed events, ack what they handled, and take over what a consumer dropped."""

import time

import pytest
import redis
from django.conf import settings
from django.db import transaction

from certhub import outbox
from certhub.models import OutboxEvent
from certhub.streams import Message, StreamConsumer
from certificates import events
from tests.distribution.conftest import make_version

Kind = events
GROUP = "haproxy"


def publish(certificate, client, stream: str, count: int = 1) -> list[str]:
    for _ in range(count):
        with transaction.atomic():
            events.record_event(kind=Kind.FAILED, certificate=certificate, reason="rate limited")
    outbox.relay(client=client, stream=stream)
    return [str(e) for e in OutboxEvent.objects.order_by("seq").values_list("event_id", flat=True)]


def consumer(name: str, client, stream: str, **options) -> StreamConsumer:
    c = StreamConsumer(stream, GROUP, name, redis_client=client, block_ms=None, **options)
    c.ensure_group()
    return c


def pending(client, stream: str) -> int:
    return client.xpending(stream, GROUP)["pending"]


@pytest.mark.django_db(transaction=True)
def test_a_consumer_handles_and_acks_new_events(certificate, shared_redis, stream):
    # A client without decode_responses, as an adapter may have: messages come out as text all the same.
    a = consumer("a", redis.Redis.from_url(settings.REDIS_URL), stream)
    a.ensure_group()  # a second time: the existing group is kept
    version = make_version(certificate)
    with transaction.atomic():
        events.record_event(kind=Kind.VERSION_CREATED, certificate=certificate, version=version)
    outbox.relay(client=shared_redis, stream=stream)
    event = OutboxEvent.objects.get()
    seen: list[Message] = []

    assert a.process(seen.append, count=10) == 1

    [message] = seen
    assert message.event_id == str(event.event_id)
    assert message.kind == Kind.VERSION_CREATED
    assert message.team_id == certificate.team_id
    assert message.subject_id == str(certificate.pk)
    assert message.payload == event.payload
    assert pending(shared_redis, stream) == 0
    assert a.process(seen.append) == 0
    assert len(seen) == 1


@pytest.mark.django_db(transaction=True)
def test_a_failed_event_stays_pending_until_another_consumer_claims_it(certificate, shared_redis, stream):
    event_ids = publish(certificate, shared_redis, stream, count=2)
    a = consumer("a", shared_redis, stream, claim_idle_ms=50)
    b = consumer("b", shared_redis, stream, claim_idle_ms=50)

    def fail_first(message: Message) -> None:
        if message.event_id == event_ids[0]:
            raise ConnectionError("HAProxy runtime API unreachable")

    assert a.process(fail_first) == 1
    assert pending(shared_redis, stream) == 1
    assert b.claim_stale() == []  # not idle long enough yet

    time.sleep(0.1)
    seen: list[Message] = []
    assert b.process(seen.append) == 1

    assert [m.event_id for m in seen] == [event_ids[0]]
    assert pending(shared_redis, stream) == 0


@pytest.mark.django_db(transaction=True)
def test_a_duplicate_publication_carries_the_same_event_id(certificate, shared_redis, stream):
    [event_id] = publish(certificate, shared_redis, stream)
    # As if the relay died after XADD and before marking the event published.
    OutboxEvent.objects.update(published_at=None)
    assert outbox.relay(client=shared_redis, stream=stream) == 1
    seen: list[Message] = []

    assert consumer("a", shared_redis, stream).process(seen.append) == 2

    assert [m.event_id for m in seen] == [event_id, event_id]
    assert seen[0].stream_id != seen[1].stream_id


@pytest.mark.django_db(transaction=True)
def test_claim_stale_takes_over_many_pending_events_in_order(certificate, shared_redis, stream):
    event_ids = publish(certificate, shared_redis, stream, count=5)
    a = consumer("a", shared_redis, stream, claim_idle_ms=0)
    assert [m.event_id for m in a.read(count=5)] == event_ids  # read, never acked: a died

    claimed = consumer("b", shared_redis, stream, claim_idle_ms=0).claim_stale(count=3)

    assert [m.event_id for m in claimed] == event_ids[:3]
    consumers = {c["name"]: c["pending"] for c in shared_redis.xinfo_consumers(stream, GROUP)}
    assert consumers == {"a": 2, "b": 3}
