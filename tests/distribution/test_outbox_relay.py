"""The outbox is written with the change and relayed to the Redis Stream in order, through outages."""

import json
import logging
import threading
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone

from certhub import outbox
from certhub.celery import app as celery_app
from certhub.models import OutboxEvent
from certificates import events
from certificates.models import CertificateVersion
from tests.distribution.conftest import make_certificate, make_version

Kind = events


def record(certificate, kind=Kind.VERSION_CREATED, version=None, reason=""):
    with transaction.atomic():
        return events.record_event(kind=kind, certificate=certificate, version=version, reason=reason)


def stream_event_ids(client, stream: str) -> list[str]:
    return [fields["event_id"] for _, fields in client.xrange(stream)]


def event_ids_in_seq_order() -> list[str]:
    return [str(event_id) for event_id in OutboxEvent.objects.order_by("seq").values_list("event_id", flat=True)]


@pytest.mark.django_db(transaction=True)
def test_an_event_rolls_back_with_its_change_and_commits_with_it(certificate):
    with pytest.raises(RuntimeError, match="change failed"), transaction.atomic():
        events.record_event(kind=Kind.FAILED, certificate=certificate, reason="DNS record not served")
        raise RuntimeError("change failed")
    assert not OutboxEvent.objects.exists()

    with transaction.atomic():
        event = events.record_event(kind=Kind.FAILED, certificate=certificate, reason="DNS record not served")

    assert list(OutboxEvent.objects.all()) == [event]
    assert event.team_id == certificate.team_id
    assert event.subject_id == str(certificate.pk)
    assert event.published_at is None
    assert event.payload["reason"] == "DNS record not served"
    assert event.payload["version"] is None


@pytest.mark.django_db(transaction=True)
def test_recording_outside_a_transaction_is_refused(certificate):
    with pytest.raises(RuntimeError, match="inside the transaction"):
        events.record_event(kind=Kind.DELETED, certificate=certificate)
    assert not OutboxEvent.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_the_payload_never_reads_the_private_key(certificate, django_assert_num_queries):
    version_id = make_version(certificate).pk
    # Deferred: reading private_key_pem would cost a query, so the count proves it is never touched.
    version = CertificateVersion.objects.defer("private_key_pem").get(pk=version_id)
    with transaction.atomic(), django_assert_num_queries(1):  # the insert
        event = events.record_event(kind=Kind.VERSION_CREATED, certificate=certificate, version=version)

    assert event.payload == {
        "certificate_id": str(certificate.pk),
        "team_id": certificate.team_id,
        "name": "www",
        "dns_names": ["www.example.test"],
        "state": "pending",
        "version": {
            "id": version_id,
            "serial": "01",
            "not_before": version.not_before.isoformat(),
            "not_after": version.not_after.isoformat(),
            "sha1_fingerprint": "a1" * 20,
            "sha256_fingerprint": "b2" * 32,
            "key_type": "ecdsa-p256",
        },
        "reason": "",
    }


@pytest.mark.django_db(transaction=True)
def test_no_key_material_reaches_the_database_or_the_stream(certificate, shared_redis, stream):
    version = make_version(certificate)
    assert "PRIVATE KEY" in CertificateVersion.objects.get(pk=version.pk).private_key_pem
    record(certificate, version=version)

    assert outbox.relay(client=shared_redis, stream=stream) == 1

    assert "PRIVATE KEY" not in json.dumps(OutboxEvent.objects.get().payload)
    with connection.cursor() as cursor:  # the stored text, not what Django decodes from it
        cursor.execute("SELECT payload FROM certhub_outboxevent")
        assert "PRIVATE KEY" not in cursor.fetchone()[0]
    [(_, fields)] = shared_redis.xrange(stream)
    assert "PRIVATE KEY" not in json.dumps(fields)
    assert "BEGIN" not in fields["payload"]


@pytest.mark.django_db(transaction=True)
def test_relay_publishes_in_order_once_and_marks_published(team, shared_redis, stream):
    first, second = make_certificate(team, "www"), make_certificate(team, "api")
    version = make_version(first)
    record(first, version=version)
    record(second, kind=Kind.FAILED, reason="CAA forbids the CA")
    record(first, kind=Kind.DELETED)

    assert outbox.relay(client=shared_redis, stream=stream) == 3

    assert not OutboxEvent.objects.filter(published_at__isnull=True).exists()
    entries = shared_redis.xrange(stream)
    assert [fields["event_id"] for _, fields in entries] == event_ids_in_seq_order()
    assert [fields["kind"] for _, fields in entries] == [Kind.VERSION_CREATED, Kind.FAILED, Kind.DELETED]
    _, created = entries[0]
    assert created["team_id"] == str(team.pk)
    assert created["subject_id"] == str(first.pk)
    assert json.loads(created["payload"])["version"]["serial"] == version.serial

    assert outbox.relay(client=shared_redis, stream=stream) == 0
    assert len(shared_redis.xrange(stream)) == 3


@pytest.mark.django_db(transaction=True)
def test_relay_goes_through_batches_in_order(team, shared_redis, stream):
    certificate = make_certificate(team)
    for _ in range(7):
        record(certificate, kind=Kind.FAILED)

    assert outbox.relay(batch=3, client=shared_redis, stream=stream) == 7
    assert stream_event_ids(shared_redis, stream) == event_ids_in_seq_order()


@pytest.mark.django_db(transaction=True)
def test_events_created_while_redis_is_down_arrive_once_it_is_back(certificate, redis_server, settings, stream):
    settings.REDIS_URL = redis_server.url
    client = outbox.redis_client()
    assert client.ping()  # the cached client now holds a pooled connection the restart will cut

    redis_server.stop()
    for _ in range(5):
        record(certificate, kind=Kind.FAILED)
    assert outbox.relay(stream=stream) == 0
    assert OutboxEvent.objects.filter(published_at__isnull=True).count() == 5

    redis_server.start()
    assert outbox.relay(stream=stream) == 5

    assert stream_event_ids(client, stream) == event_ids_in_seq_order()
    assert not OutboxEvent.objects.filter(published_at__isnull=True).exists()


@pytest.mark.django_db(transaction=True)
def test_concurrent_relays_publish_each_event_once_in_order(team, shared_redis, stream):
    certificate = make_certificate(team)
    for _ in range(30):
        record(certificate, kind=Kind.FAILED)
    start = threading.Barrier(4)
    published: list[int] = []

    def run() -> None:
        try:
            start.wait()
            published.append(outbox.relay(batch=2, client=shared_redis, stream=stream))
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert sum(published) == 30
    assert stream_event_ids(shared_redis, stream) == event_ids_in_seq_order()


@pytest.mark.django_db(transaction=True)
def test_without_redis_events_stay_unpublished_and_it_says_so_once(certificate, settings, monkeypatch, caplog):
    settings.REDIS_URL = ""
    monkeypatch.setattr(outbox, "_warned_no_redis", False)
    record(certificate, kind=Kind.DELETED)

    with caplog.at_level(logging.WARNING, logger="distribution.outbox"):
        assert outbox.relay() == 0
        assert outbox.relay() == 0

    assert OutboxEvent.objects.get().published_at is None
    # Only this logger's records: the session's Celery worker threads log to the same capture.
    assert [r.message for r in caplog.records if r.name == "certhub.outbox"] == [
        "outbox relay: REDIS_URL is not set, events stay unpublished until it is"
    ]


@pytest.mark.django_db(transaction=True)
def test_pruning_deletes_only_published_events_past_retention(certificate, settings):
    settings.CERTHUB_OUTBOX_RETENTION_DAYS = 30
    now = timezone.now()
    old_published = [record(certificate) for _ in range(5)]
    recent_published = record(certificate)
    old_unpublished = record(certificate, kind=Kind.DELETED)
    OutboxEvent.objects.filter(seq__in=[e.seq for e in old_published]).update(
        created_at=now - timedelta(days=40), published_at=now - timedelta(days=31)
    )
    OutboxEvent.objects.filter(seq=recent_published.seq).update(published_at=now - timedelta(days=29))
    OutboxEvent.objects.filter(seq=old_unpublished.seq).update(created_at=now - timedelta(days=400))
    # Published long ago but never handled by the local handlers: still owed, never pruned.
    old_unhandled = record(certificate)
    OutboxEvent.objects.filter(seq=old_unhandled.seq).update(published_at=now - timedelta(days=31))
    OutboxEvent.objects.exclude(seq=old_unhandled.seq).update(handled_at=now - timedelta(days=31))

    assert outbox.prune(batch=2, now=now) == 5

    assert set(OutboxEvent.objects.values_list("seq", flat=True)) == {
        recent_published.seq, old_unpublished.seq, old_unhandled.seq,
    }  # fmt: skip
    assert outbox.prune(batch=2, now=now) == 0


def test_pruning_runs_daily_from_beat(settings):
    entry = next(e for e in settings.CELERY_BEAT_SCHEDULE.values() if e["task"] == "certhub.tasks.prune_outbox")
    assert entry["task"] in celery_app.tasks
    schedule = entry["schedule"]
    assert (len(schedule.minute), len(schedule.hour), len(schedule.day_of_week), len(schedule.day_of_month)) == (
        1, 1, 7, 31,
    )  # fmt: skip


@pytest.mark.django_db(transaction=True)
def test_events_redis_lost_are_published_again_with_their_own_ids(certificate, redis_server, settings, stream):
    settings.REDIS_URL = redis_server.url
    client = outbox.redis_client()
    for _ in range(30):
        record(certificate, kind=Kind.FAILED)
    assert outbox.relay(stream=stream) == 30
    ids = event_ids_in_seq_order()
    assert stream_event_ids(client, stream) == ids

    client.flushdb()  # or a restart without persistence: the stream and the sentinel are gone
    record(certificate, kind=Kind.DELETED)
    assert outbox.relay(stream=stream) == 31
    assert stream_event_ids(client, stream) == event_ids_in_seq_order() == [*ids, event_ids_in_seq_order()[-1]]

    redis_server.stop()
    redis_server.start()
    assert outbox.relay(stream=stream) == 31  # every kept event once more, in order
    assert stream_event_ids(client, stream) == event_ids_in_seq_order()
    assert outbox.relay(stream=stream) == 0  # and nothing twice while Redis keeps its data


@pytest.mark.django_db(transaction=True)
def test_replay_outbox_command_publishes_kept_events_again(certificate, redis_server, settings, stream):
    from django.core.management import call_command

    settings.REDIS_URL = redis_server.url
    for _ in range(3):
        record(certificate, kind=Kind.FAILED)
    assert outbox.relay() == 3
    call_command("replay_outbox", "--since", "2000-01-01T00:00")
    entries = outbox.redis_client().xrange("certhub.certificates")
    assert [fields["event_id"] for _, fields in entries] == event_ids_in_seq_order() * 2
