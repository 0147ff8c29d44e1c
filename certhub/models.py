"""Tenancy (teams, their members and their API tokens) and the outbox every app records events in."""

import hashlib
import secrets
import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone

TOKEN_PREFIX = "chp_"
# Writing last_used_at on every request would turn reads into writes; once a minute is enough.
LAST_USED_RESOLUTION_SECONDS = 60


class Team(models.Model):
    name = models.CharField(max_length=100, unique=True)
    created_at = models.DateTimeField(default=timezone.now)
    members = models.ManyToManyField(settings.AUTH_USER_MODEL, through="Membership", related_name="teams")

    def __str__(self) -> str:
        return self.name


class Membership(models.Model):
    team = models.ForeignKey(Team, on_delete=models.CASCADE)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["team", "user"], name="membership_unique")]

    def __str__(self) -> str:
        return f"{self.user} in {self.team}"


class ApiToken(models.Model):
    class Scope(models.TextChoices):
        READ = "read"
        WRITE = "write"

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100, blank=True)
    # sha256 of the whole token; tokens carry 256 bits of entropy, so a fast hash is enough.
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    # The first characters, so people can tell their tokens apart; never enough to use one.
    prefix = models.CharField(max_length=12, editable=False)
    scopes = models.JSONField(default=list)
    created_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.team})"

    @staticmethod
    def hash(token: str) -> str:
        return hashlib.sha256(token.encode()).hexdigest()

    @classmethod
    def issue(cls, *, team: Team, scopes: list[str], name: str = "") -> tuple["ApiToken", str]:
        """Create a token and return it with its plaintext, which is never stored."""
        unknown = set(scopes) - set(cls.Scope.values)
        if unknown or not scopes:
            raise ValueError(f"scopes must be a non-empty subset of {cls.Scope.values}")
        plaintext = TOKEN_PREFIX + secrets.token_urlsafe(32)
        token = cls.objects.create(
            team=team,
            name=name,
            token_hash=cls.hash(plaintext),
            prefix=plaintext[: len(TOKEN_PREFIX) + 4],
            scopes=sorted(set(scopes)),
        )
        return token, plaintext

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None

    def revoke(self) -> None:
        self.revoked_at = timezone.now()
        self.save(update_fields=["revoked_at"])

    def touch(self) -> None:
        now = timezone.now()
        if self.last_used_at and (now - self.last_used_at).total_seconds() < LAST_USED_RESOLUTION_SECONDS:
            return
        ApiToken.objects.filter(pk=self.pk).update(last_used_at=now)
        self.last_used_at = now


class OutboxEvent(models.Model):
    """One event about a change, written in the same transaction as the change (the outbox).

    Model-agnostic: the app that owns the change builds the payload and names the `stream` (the
    Redis Stream it is relayed to) and the `subject_id` (the id of what changed). `seq`, the
    auto-increment key, orders delivery; `event_id` is the id consumers see, the same on every
    duplicate. `team_id` and `subject_id` are plain columns, so the event outlives its subject.
    Two deliveries: `published_at` once Redis took it, `handled_at` once this project's own
    handlers (CERTHUB_OUTBOX_HANDLERS) ran for it; neither waits for the other.
    """

    seq = models.BigAutoField(primary_key=True)
    event_id = models.UUIDField(unique=True, default=uuid.uuid4, editable=False)
    stream = models.CharField(max_length=100)
    kind = models.CharField(max_length=64)
    team_id = models.BigIntegerField()
    subject_id = models.CharField(max_length=64, db_index=True)
    payload = models.JSONField(default=dict)
    created_at = models.DateTimeField(default=timezone.now)
    published_at = models.DateTimeField(null=True, blank=True)
    handled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["seq"]
        # Each delivery's query: not yet delivered (IS NULL) in seq order, a range on its index.
        indexes = [
            models.Index(fields=["published_at", "seq"], name="outbox_event_unpublished"),
            models.Index(fields=["handled_at", "seq"], name="outbox_event_unhandled"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.subject_id} #{self.seq}"
