"""ACME accounts: one per CA directory, the key encrypted at rest."""

from django.db import models
from django.utils import timezone

from certhub.crypto import EncryptedTextField


class AcmeAccount(models.Model):
    directory_url = models.URLField(max_length=500, unique=True)
    key_pem = EncryptedTextField()
    account_url = models.URLField(max_length=500, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    # The CA answered rateLimited to a new order: none is sent before this (its Retry-After).
    orders_paused_until = models.DateTimeField(null=True, blank=True)
    # Since when the CA has not answered (connection failures, 5xx); None while it answers.
    unreachable_since = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return self.account_url or self.directory_url


class LimitUse(models.Model):
    """One use of a CA rate limit by an account (acme_client.limits): counted in a sliding window."""

    account = models.ForeignKey(AcmeAccount, on_delete=models.CASCADE, related_name="limit_uses")
    limit = models.CharField(max_length=32)  # a key of acme_client.limits.LIMITS
    key = models.CharField(max_length=255, blank=True)  # what the limit is per: a domain, a name, a name set
    at = models.DateTimeField()

    class Meta:
        indexes = [models.Index(fields=["account", "limit", "key", "at"], name="limit_use_window")]

    def __str__(self) -> str:
        return f"{self.limit} {self.key} at {self.at:%Y-%m-%d %H:%M:%S}"
