"""Read an event stream as one consumer of a Redis consumer group (for systems outside CertHub).

Each consuming system is one group; each of its processes is one consumer. A message is
acked only after its handler succeeded; one whose consumer raised or died stays pending and is
claimed by a consumer of the same group once it has been idle for `claim_idle_ms`. Delivery is
at least once: handlers must be idempotent, and a duplicate carries the same event_id.
"""

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Message:
    """One stream entry: an outbox event as the relay published it."""

    stream_id: str
    event_id: str
    kind: str
    team_id: int
    subject_id: str
    payload: dict[str, Any]

    @classmethod
    def from_entry(cls, stream_id: str | bytes, fields: dict) -> "Message":
        """Parse an entry as returned by redis-py, with or without decode_responses."""
        f = {_text(key): _text(value) for key, value in fields.items()}
        return cls(
            stream_id=_text(stream_id),
            event_id=f["event_id"],
            kind=f["kind"],
            team_id=int(f["team_id"]),
            subject_id=f["subject_id"],
            payload=json.loads(f["payload"]),
        )


class StreamConsumer:
    """One named consumer of `group` on `stream`."""

    def __init__(
        self,
        stream: str,
        group: str,
        consumer: str,
        *,
        redis_client: redis.Redis,
        block_ms: int | None = 5000,
        claim_idle_ms: int = 60_000,
    ) -> None:
        # block_ms=None returns at once when nothing is new; note that Redis reads 0 as "forever".
        self.stream = stream
        self.group = group
        self.consumer = consumer
        self.redis = redis_client
        self.block_ms = block_ms
        self.claim_idle_ms = claim_idle_ms

    def ensure_group(self, start_id: str = "0") -> None:
        """Create the group (and the stream) if missing; a new group reads from `start_id`."""
        try:
            self.redis.xgroup_create(self.stream, self.group, id=start_id, mkstream=True)
        except redis.ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise

    def read(self, count: int = 10) -> list[Message]:
        """Read up to `count` messages never delivered to this group."""
        response = self.redis.xreadgroup(
            self.group, self.consumer, {self.stream: ">"}, count=count, block=self.block_ms
        )
        # [[stream, [(id, fields), ...]]], or None / [] when nothing came within block_ms.
        return [Message.from_entry(entry_id, fields) for _, entries in response or [] for entry_id, fields in entries]

    def ack(self, message: Message) -> None:
        """Mark `message` done for this group."""
        self.redis.xack(self.stream, self.group, message.stream_id)

    def claim_stale(self, count: int = 10) -> list[Message]:
        """Take over up to `count` messages pending in the group for longer than claim_idle_ms."""
        messages: list[Message] = []
        cursor = "0-0"
        while len(messages) < count:
            # Redis 7 answers [next cursor, claimed entries, ids of entries trimmed away meanwhile].
            cursor, entries, *_ = self.redis.xautoclaim(
                self.stream,
                self.group,
                self.consumer,
                min_idle_time=self.claim_idle_ms,
                start_id=cursor,
                count=count - len(messages),
            )
            messages += [Message.from_entry(entry_id, fields) for entry_id, fields in entries if fields]
            if _text(cursor) == "0-0":
                break
        return messages

    def process(self, handler: Callable[[Message], object], count: int = 10) -> int:
        """Handle stale messages first, then new ones; ack each success and return how many."""
        handled = 0
        messages = self.claim_stale(count)
        if len(messages) < count:
            messages += self.read(count - len(messages))
        for message in messages:
            try:
                handler(message)
            except Exception:
                # Left pending: this or another consumer claims it after claim_idle_ms.
                log.exception("%s/%s: event %s failed, left pending", self.group, self.consumer, message.event_id)
                continue
            self.ack(message)
            handled += 1
        return handled


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
