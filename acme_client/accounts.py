"""The ACME account for the configured CA, created and registered on first use."""

import threading

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from django.conf import settings
from django.db import IntegrityError, transaction

from acme_client.models import AcmeAccount
from acme_client.protocol import AcmeSession

_local = threading.local()
# Bumped by forget_sessions() so every thread drops its cached sessions.
_generation = 0


def _new_account_key_pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def account_for(directory_url: str) -> AcmeAccount:
    account = AcmeAccount.objects.filter(directory_url=directory_url).first()
    if account is not None:
        return account
    try:
        with transaction.atomic():
            return AcmeAccount.objects.create(directory_url=directory_url, key_pem=_new_account_key_pem())
    except IntegrityError:
        # Another worker created it first: use theirs.
        return AcmeAccount.objects.get(directory_url=directory_url)


def session() -> AcmeSession:
    """A registered session for ACME_DIRECTORY_URL, kept per thread (directory and nonces reused)."""
    directory_url = settings.ACME_DIRECTORY_URL
    if getattr(_local, "generation", None) != _generation:
        _local.sessions, _local.generation = {}, _generation
    cached = _local.sessions.get(directory_url)
    if cached is not None:
        return cached
    account = account_for(directory_url)
    acme = AcmeSession(
        directory_url, account.key_pem.encode(), ca_bundle=settings.ACME_CA_BUNDLE or None,
        account_url=account.account_url or None,
    )  # fmt: skip
    if not account.account_url:
        account.account_url = acme.register(
            email=settings.ACME_ACCOUNT_EMAIL or None,
            eab_kid=settings.ACME_EAB_KID or None,
            eab_hmac_key=settings.ACME_EAB_HMAC_KEY or None,
        )
        AcmeAccount.objects.filter(pk=account.pk).update(account_url=account.account_url)
    _local.sessions[directory_url] = acme
    return acme


def forget_sessions() -> None:
    """Make every thread drop its cached sessions (tests switch CAs and empty the database)."""
    global _generation
    _generation += 1
