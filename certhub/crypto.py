"""Encryption at rest for secrets (private keys, account keys) with rotatable Fernet keys.

CERTHUB_ENCRYPTION_KEYS lists Fernet keys: the first encrypts, all decrypt, and
`manage.py rotate_encryption_keys` re-encrypts every row with the first one.
"""

import base64
import hashlib
from functools import cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import models


@cache
def _fernet(keys: tuple[str, ...]) -> MultiFernet:
    if not keys:
        # Only the embedded default (DEBUG) gets here: derive a key from SECRET_KEY.
        derived = base64.urlsafe_b64encode(hashlib.sha256(b"certhub-at-rest:" + settings.SECRET_KEY.encode()).digest())
        keys = (derived.decode(),)
    try:
        return MultiFernet([Fernet(k) for k in keys])
    except ValueError:
        raise ImproperlyConfigured("CERTHUB_ENCRYPTION_KEYS must be url-safe base64 Fernet keys") from None


def fernet() -> MultiFernet:
    return _fernet(tuple(settings.CERTHUB_ENCRYPTION_KEYS))


def encrypt(plaintext: str) -> str:
    return fernet().encrypt(plaintext.encode()).decode()


def decrypt(token: str) -> str:
    try:
        return fernet().decrypt(token.encode()).decode()
    except InvalidToken:
        raise ImproperlyConfigured("a stored secret cannot be decrypted with CERTHUB_ENCRYPTION_KEYS") from None


def rotate(token: str) -> str:
    return fernet().rotate(token.encode()).decode()


class EncryptedTextField(models.TextField):
    """A TextField stored as a Fernet token; Python code sees plaintext, the database never does."""

    def from_db_value(self, value, expression, connection):
        return value if value in (None, "") else decrypt(value)

    def get_prep_value(self, value):
        value = super().get_prep_value(value)
        return value if value in (None, "") else encrypt(value)
