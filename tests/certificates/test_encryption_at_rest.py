"""Secrets are Fernet tokens in the database; rotation re-encrypts them with the first key."""

import pytest
from cryptography.fernet import Fernet, InvalidToken
from django.core.management import call_command
from django.db import connection

from acme_client.models import AcmeAccount
from certhub import crypto

pytestmark = pytest.mark.django_db

SECRET = "-----BEGIN PRIVATE KEY-----\nnot-a-real-key\n-----END PRIVATE KEY-----\n"


def raw_key_column() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT key_pem FROM acme_client_acmeaccount")
        return cursor.fetchone()[0]


def test_rotation_re_encrypts_every_row_with_the_first_key(settings):
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.CERTHUB_ENCRYPTION_KEYS = [old]
    AcmeAccount.objects.create(directory_url="https://ca.test/dir", key_pem=SECRET)
    before = raw_key_column()
    assert SECRET not in before and Fernet(old).decrypt(before.encode()).decode() == SECRET

    settings.CERTHUB_ENCRYPTION_KEYS = [new, old]  # new key first: it encrypts, both decrypt
    assert AcmeAccount.objects.get().key_pem == SECRET
    call_command("rotate_encryption_keys")
    after = raw_key_column()
    assert after != before
    assert Fernet(new).decrypt(after.encode()).decode() == SECRET
    with pytest.raises(InvalidToken):
        Fernet(old).decrypt(after.encode())

    settings.CERTHUB_ENCRYPTION_KEYS = [new]  # the old key can now be retired
    assert AcmeAccount.objects.get().key_pem == SECRET


def test_a_missing_key_fails_loudly_instead_of_returning_garbage(settings):
    settings.CERTHUB_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    AcmeAccount.objects.create(directory_url="https://ca.test/dir", key_pem=SECRET)
    settings.CERTHUB_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    with pytest.raises(crypto.ImproperlyConfigured, match="cannot be decrypted"):
        AcmeAccount.objects.get()
