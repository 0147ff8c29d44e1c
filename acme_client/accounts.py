"""The ACME account for the configured CA, created and registered on first use."""

import logging
import threading

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from django.conf import settings
from django.core.mail import mail_admins
from django.db import IntegrityError, OperationalError, connection, transaction
from django.utils import timezone

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


def ca_config(directory_url: str) -> dict[str, str]:
    """The settings of one of the CAs in ACME_CAS (the first is ACME_DIRECTORY_URL)."""
    for ca in settings.ACME_CAS:
        if ca["directory_url"] == directory_url:
            return ca
    if directory_url == settings.ACME_DIRECTORY_URL:  # tests point ACME_DIRECTORY_URL elsewhere at run time
        return {"directory_url": directory_url, "ca_bundle": settings.ACME_CA_BUNDLE,
                "eab_kid": settings.ACME_EAB_KID, "eab_hmac_key": settings.ACME_EAB_HMAC_KEY}  # fmt: skip
    raise ValueError(f"{directory_url} is not one of the configured CAs")


def directory_urls() -> list[str]:
    """The CAs in order of preference: ACME_DIRECTORY_URL first, then the fallback."""
    urls = [settings.ACME_DIRECTORY_URL]
    urls += [ca["directory_url"] for ca in settings.ACME_CAS if ca["directory_url"] not in urls]
    return urls


def session(directory_url: str | None = None) -> AcmeSession:
    """A registered session for a CA (ACME_DIRECTORY_URL by default), kept per thread."""
    directory_url = directory_url or settings.ACME_DIRECTORY_URL
    if getattr(_local, "generation", None) != _generation:
        _local.sessions, _local.generation = {}, _generation
    cached = _local.sessions.get(directory_url)
    if cached is not None:
        return cached
    account = account_for(directory_url)
    ca = ca_config(directory_url)
    acme = AcmeSession(
        directory_url, account.key_pem.encode(), ca_bundle=ca["ca_bundle"] or None,
        account_url=account.account_url or None,
    )  # fmt: skip
    if not account.account_url:
        _register(acme, account.pk, ca)
    _local.sessions[directory_url] = acme
    return acme


def _register(acme: AcmeSession, account_pk: int, ca: dict[str, str]) -> None:
    """Register the account at the CA, once: under the account row's lock, so many workers that find
    it unregistered (first use, or after the CA forgot it) register it one time between them."""
    with transaction.atomic():
        try:
            # Not waiting for the lock: its holder may wait on the CA for a whole timeout, and the
            # workers queued behind it would say nothing meanwhile. They retry the step instead.
            account = AcmeAccount.objects.select_for_update(nowait=connection.vendor != "sqlite").get(pk=account_pk)
        except OperationalError:
            raise AcmeError("CertHub's account is being registered at the CA; trying again", permanent=False) from None
        if account.account_url:  # another worker registered it while this one waited for the lock
            acme.account_url = account.account_url
            return
        try:
            url = acme.register(
                email=settings.ACME_ACCOUNT_EMAIL or None,
                eab_kid=ca["eab_kid"] or None,
                eab_hmac_key=ca["eab_hmac_key"] or None,
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


def ca_unreachable(directory_url: str) -> None:
    """The CA did not answer (a connection failure, a 5xx): note since when, if not noted yet."""
    AcmeAccount.objects.filter(directory_url=directory_url, unreachable_since__isnull=True).update(
        unreachable_since=timezone.now()
    )


def ca_answered(directory_url: str) -> None:
    AcmeAccount.objects.filter(directory_url=directory_url, unreachable_since__isnull=False).update(
        unreachable_since=None
    )


def ca_down_for(directory_url: str) -> float:
    """Seconds the CA has been unreachable (0 while it answers)."""
    since = AcmeAccount.objects.filter(directory_url=directory_url).values_list("unreachable_since", flat=True).first()
    return (timezone.now() - since).total_seconds() if since else 0.0
