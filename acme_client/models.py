"""ACME accounts: one per CA directory, the key encrypted at rest."""

from django.db import models
from django.utils import timezone

from certhub.crypto import EncryptedTextField


class AcmeAccount(models.Model):
    directory_url = models.URLField(max_length=500, unique=True)
    key_pem = EncryptedTextField()
    account_url = models.URLField(max_length=500, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return self.account_url or self.directory_url
