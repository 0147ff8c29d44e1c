"""The ACME account for the configured CA, created and registered on first use."""

import logging
import threading

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from django.conf import settings
from django.core.mail import mail_admins
from django.db import IntegrityError, transaction

from acme_client.models import AcmeAccount
from acme_client.protocol import AcmeError, AcmeSession

log = logging.getLogger(__name__)

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
        _register(acme, account.pk)
    _local.sessions[directory_url] = acme
    return acme


def _register(acme: AcmeSession, account_pk: int) -> None:
    """Register the account at the CA, once: under the account row's lock, so many workers that find
    it unregistered (first use, or after the CA forgot it) register it one time between them."""
    with transaction.atomic():
        account = AcmeAccount.objects.select_for_update().get(pk=account_pk)
        if account.account_url:  # another worker registered it while this one waited for the lock
            acme.account_url = account.account_url
            return
        try:
            url = acme.register(
                email=settings.ACME_ACCOUNT_EMAIL or None,
                eab_kid=settings.ACME_EAB_KID or None,
                eab_hmac_key=settings.ACME_EAB_HMAC_KEY or None,
            )
        except AcmeError as e:
            log.error("ACME account registration at %s failed: %s", account.directory_url, e)
            mail_admins(
                "CertHub cannot register its ACME account",
                f"Registering at {account.directory_url} failed: {e}\nNo certificate can be issued or renewed "
                "until it succeeds; issuances keep retrying.",
                fail_silently=True,
            )
            raise
        AcmeAccount.objects.filter(pk=account.pk).update(account_url=url)


def account_forgotten(directory_url: str, account_url: str | None) -> None:
    """The CA answered accountDoesNotExist for `account_url` (a CA reset, a deactivated account):
    drop it, so the next session registers again. Safe to call from many workers at once: only the
    first one clears the URL they all saw; every thread drops its cached sessions."""
    log.warning("the CA at %s no longer knows account %s; registering again", directory_url, account_url)
    if account_url:
        AcmeAccount.objects.filter(directory_url=directory_url, account_url=account_url).update(account_url="")
    forget_sessions()


def forget_sessions() -> None:
    """Make every thread drop its cached sessions (tests switch CAs and empty the database)."""
    global _generation
    _generation += 1
