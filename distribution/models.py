"""The transactional outbox: events written with the change they describe, relayed to Redis later."""

import uuid

from django.db import models
from django.utils import timezone


class OutboxEvent(models.Model):
    """One event about a certificate, written in the same transaction as the change.

    `seq` (the auto-increment primary key) orders the relay; `event_id` is the id consumers see,
    the same on every duplicate delivery. `team_id` and `certificate_id` are plain columns, not
    foreign keys, so the event outlives the certificate (and team) it describes.
    """

    class Kind(models.TextChoices):
        VERSION_CREATED = "certificate.version_created"
        FAILED = "certificate.failed"
        DELETED = "certificate.deleted"

    seq = models.BigAutoField(primary_key=True)
    event_id = models.UUIDField(unique=True, default=uuid.uuid4, editable=False)
    kind = models.CharField(max_length=64, choices=Kind.choices)
    team_id = models.BigIntegerField()
    certificate_id = models.UUIDField(db_index=True)
    payload = models.JSONField(default=dict)
    created_at = models.DateTimeField(default=timezone.now)
    published_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["seq"]
        # The relay's query: unpublished (published_at IS NULL) in seq order, a range on this index.
        indexes = [models.Index(fields=["published_at", "seq"], name="outbox_unpublished")]

    def __str__(self) -> str:
        return f"{self.kind} {self.certificate_id} #{self.seq}"
