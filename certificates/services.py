"""Certificate requests and deletions."""

import unicodedata
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import ProtectedError
from django.utils import timezone
from django.utils.module_loading import import_string

from acme_client import accounts, limits
from acme_client.protocol import AcmeError
from certhub.models import Team
from certificates import events, validation
from certificates.models import VERSION_PEM_FIELDS, Certificate, CertificateVersion, Issuance, KeyType
from dns_zones.services import Invalid

LIVE_STATES = (Certificate.State.PENDING, Certificate.State.VERIFIED)
LETS_ENCRYPT_UNUSED = ("private_key", "leaf_certificate", "certificate_chain", "allow_untrusted")


def _clean_name(raw: Any) -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise Invalid({"name": ["is required"]})
    name = raw.strip()
    if len(name) > 255:
        raise Invalid({"name": ["must be at most 255 characters"]})
    if any(unicodedata.category(ch) in ("Cc", "Cs") for ch in name):
        raise Invalid({"name": ["must not hold control characters (NUL, tab, newline, ...)"]})
    return name


NAME_TAKEN = "your team already has a certificate with this name"


def _clean_key_type(key_type: Any) -> str:
    if key_type not in KeyType.values:
        raise Invalid({"key_type": [f"must be one of {', '.join(KeyType.values)}"]})
    return key_type


def certificate_request(*, team: Team, data: dict[str, Any]) -> Certificate:
    """Validate a Let's Encrypt request, store it as pending and queue its issuance."""
    name = _clean_name(data.get("name"))
    kind = data.get("type") or Certificate.Type.LETS_ENCRYPT
    if kind == Certificate.Type.CUSTOM:
        return custom_certificate_upload(team=team, name=name, data=data)
    if kind != Certificate.Type.LETS_ENCRYPT:
        raise Invalid({"type": ["must be lets_encrypt or custom"]})
    for field in LETS_ENCRYPT_UNUSED:
        if data.get(field) not in (None, "", False):
            raise Invalid({field: ["is not used by lets_encrypt certificates; leave it out"]})
    key_type = _clean_key_type(data.get("key_type") or KeyType.ECDSA_P256)
    profile = _clean_profile(data.get("profile"))
    names = validation.clean_dns_names(data.get("dns_names"))
    validation.check_names_hosted(team, names)
    key = validation.names_key(names)
    if Certificate.objects.filter(team=team, name=name).exists():
        raise Invalid({"name": [NAME_TAKEN]})
    duplicate = Certificate.objects.filter(team=team, names_key=key, state__in=LIVE_STATES).first()
    if duplicate is not None:
        raise Invalid({"dns_names": [f"your certificate {duplicate.name!r} already covers exactly these names"]})
    _check_ca_limits(names)
    try:
        with transaction.atomic():
            certificate = Certificate.objects.create(
                team=team, name=name, type=kind, dns_names=names, names_key=key, key_type=key_type, profile=profile
            )
            issuance_start(certificate=certificate)
    except IntegrityError:
        raise Invalid({"name": [NAME_TAKEN]}) from None
    return certificate


def issuance_start(
    *,
    certificate: Certificate,
    reason: str = "issue",
    replaces: str = "",
    now: datetime | None = None,
    start_at: datetime | None = None,
) -> Issuance:
    """Open an issuance for the certificate's next version, due at start_at (default now).

    Its first step is queued on commit; a start further off than a task countdown may wait is
    left to the resume sweep.
    """
    from certificates.tasks import LONGEST_COUNTDOWN, advance_issuance

    now = now or timezone.now()
    start_at = start_at or now
    issuance = Issuance.objects.create(
        certificate=certificate, dns_names=certificate.dns_names, key_type=certificate.key_type,
        profile=certificate.profile,
        reason=reason, replaces=replaces, next_attempt_at=start_at, started_at=start_at,
    )  # fmt: skip
    countdown = (start_at - now).total_seconds()
    if countdown <= LONGEST_COUNTDOWN:
        transaction.on_commit(lambda: advance_issuance.apply_async((issuance.pk,), countdown=countdown or None))
    return issuance


class InUse(Exception):
    """The certificate is used by products; `uses` names each of them."""

    def __init__(self, certificate: Certificate, uses: list[str]):
        super().__init__(f"Certificate {certificate.name!r} is in use by {'; '.join(uses)}. Detach it first.")
        self.uses = uses


def certificate_uses(certificate: Certificate) -> list[str]:
    """What uses the certificate, in words, from each app that attaches certificates (CERTHUB_CERTIFICATE_USERS)."""
    return [use for path in settings.CERTHUB_CERTIFICATE_USERS for use in import_string(path)(certificate)]


def certificate_delete(*, certificate: Certificate, revoke: bool = False) -> None:
    """Delete the certificate, its versions and open orders, removing any challenge records.

    Refused (InUse) while a product uses it: deleting it would leave them serving a certificate
    that is no longer renewed. With `revoke`, its current version is first revoked at the CA, in
    this call (cessationOfOperation, or the reason of a revocation asked for before): nothing is
    deleted unless the CA confirmed it (CaUnavailable while it cannot be reached, Invalid if it refuses).
    """
    from certificates.issuance import cleanup_challenge_records, relay_soon

    uses = certificate_uses(certificate)
    if uses:
        raise InUse(certificate, uses)
    if revoke:
        _revoke_before_delete(certificate)
    for issuance in certificate.issuances.exclude(step__in=[Issuance.Step.DONE, Issuance.Step.FAILED]):
        cleanup_challenge_records(issuance)
    with transaction.atomic():
        events.record_event(kind=events.DELETED, certificate=certificate)
        try:
            with transaction.atomic():
                certificate.delete()
        except ProtectedError:  # attached meanwhile: the database's PROTECT has the last word
            raise InUse(certificate, certificate_uses(certificate) or ["a product"]) from None
        transaction.on_commit(relay_soon, robust=True)


# RFC 5280 5.3.1 CRLReason names and codes. Let's Encrypt takes these five from subscribers (Boulder's
# UserAllowedReasons) and answers badRevocationReason to the others.
REVOCATION_REASONS = {
    "unspecified": 0, "keyCompromise": 1, "affiliationChanged": 3, "superseded": 4, "cessationOfOperation": 5,
}  # fmt: skip
RFC5280_REASONS_REFUSED = ("cACompromise", "certificateHold", "removeFromCRL", "privilegeWithdrawn", "aACompromise")
KEY_COMPROMISE = "keyCompromise"
CESSATION_OF_OPERATION = "cessationOfOperation"


class CaUnavailable(Exception):
    """The CA could not be reached, or failed for a moment: nothing was done; try again later."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


def _clean_revocation_reason(reason: Any) -> str:
    if reason in (None, ""):
        return "unspecified"
    allowed = ", ".join(REVOCATION_REASONS)
    if isinstance(reason, str) and reason in REVOCATION_REASONS:
        return reason
    if isinstance(reason, str) and reason in RFC5280_REASONS_REFUSED:
        raise Invalid({"reason": [f"Let's Encrypt does not take {reason} from subscribers; must be one of {allowed}"]})
    raise Invalid({"reason": [f"must be one of {allowed}"]})


def certificate_revoke(*, certificate: Certificate, reason: Any = None) -> CertificateVersion:
    """Ask for the current version to be revoked at the CA (the revoke_version task, retried while
    the CA cannot take it) and act on the reason at once.

    keyCompromise, superseded, affiliationChanged, unspecified (the default): a revoked certificate
    is of no use to serve, so a replacement is ordered now (unless an issuance is under way already)
    and renewals go on; every issuance makes a new key at finalize, so the replacement never has the
    revoked key. keyCompromise is signed with the certificate's own key, the proof Let's Encrypt
    needs to block that key. cessationOfOperation: the names are no longer used, so renewal stops
    (an issuance under way is stopped too) and the certificate stays, revoked; refused (InUse) while
    a product uses it, as a deletion is, since nothing would replace what it serves. (A worker already
    inside an issuance's download step may still store its version: it is then current and renewed.)
    """
    from certificates.issuance import cleanup_challenge_records
    from certificates.renewal import renewal_claim
    from certificates.tasks import revoke_version

    if certificate.type != Certificate.Type.LETS_ENCRYPT:
        raise Invalid({"type": ["only Let's Encrypt certificates issued by CertHub can be revoked here; "
                                "a custom certificate is revoked by the CA that issued it"]})  # fmt: skip
    reason = _clean_revocation_reason(reason)
    if reason == CESSATION_OF_OPERATION:
        uses = certificate_uses(certificate)
        if uses:
            raise InUse(certificate, uses)
    now = timezone.now()
    with transaction.atomic():
        certificate = Certificate.objects.select_for_update().get(pk=certificate.pk)
        version = (
            CertificateVersion.objects.filter(pk=certificate.current_version_id).defer(*VERSION_PEM_FIELDS).first()
        )
        if version is None:
            raise Invalid({"type": ["nothing has been issued for this certificate yet, so there is nothing to revoke"]})
        if version.revoked_at is not None:
            raise Invalid({"type": [f"the current version is revoked already ({version.revocation_reason})"]})
        if version.revocation_reason not in ("", reason) and not version.revocation_error:
            raise Invalid({"reason": [f"a revocation for {version.revocation_reason} is under way"]})
        # Asked again while under way, the same task is queued again: a lost task costs one more request.
        version.revocation_reason, version.revocation_requested_at, version.revocation_error = reason, now, ""
        CertificateVersion.objects.filter(pk=version.pk).update(
            revocation_reason=reason, revocation_requested_at=now, revocation_error=""
        )
        active = certificate.issuances.exclude(step__in=[Issuance.Step.DONE, Issuance.Step.FAILED])
        if reason == CESSATION_OF_OPERATION:
            for issuance in active:
                cleanup_challenge_records(issuance)
            # Clearing the claim makes a worker running a step drop its result (ClaimLost).
            active.update(
                step=Issuance.Step.FAILED, claim="", finished_at=now, private_key_pem="",
                last_error="stopped: the certificate was revoked (cessationOfOperation)",
            )  # fmt: skip
            Certificate.objects.filter(pk=certificate.pk).update(renew_at=None)
        elif not active.exists():
            renewal_claim(certificate.pk, now=now, reason="renew_now", due_only=False)
        transaction.on_commit(lambda: revoke_version.delay(version.pk))
    return version


def _revoke_at_ca(version: CertificateVersion) -> None:
    """Ask the CA that issued the version to revoke it; an AcmeError unless it did (or had before)."""
    key = version.private_key_pem if version.revocation_reason == KEY_COMPROMISE else None
    acme = accounts.session(version.directory_url or None)
    try:
        acme.revoke(version.leaf_pem, REVOCATION_REASONS[version.revocation_reason], certificate_key=key)
    except AcmeError as e:
        if e.problem_type != "alreadyRevoked":  # by an earlier delivery of the task, or by hand: done
            raise


def _record_revoked(version: CertificateVersion) -> bool:
    """Note the CA's confirmation and publish it, once; False if noted before or deleted meanwhile."""
    from certificates.issuance import relay_soon

    with transaction.atomic():
        # The certificate's lock keeps its events in order (certhub.outbox).
        certificate = Certificate.objects.select_for_update().filter(pk=version.certificate_id).first()
        if certificate is None:
            return False
        version.revoked_at = timezone.now()
        version.revocation_requested_at = version.revocation_requested_at or version.revoked_at
        if not CertificateVersion.objects.filter(pk=version.pk, revoked_at__isnull=True).update(
            revoked_at=version.revoked_at, revocation_reason=version.revocation_reason,
            revocation_requested_at=version.revocation_requested_at, revocation_error="",
        ):  # fmt: skip
            return False
        events.record_event(
            kind=events.REVOKED, certificate=certificate, version=version, reason=version.revocation_reason
        )
        transaction.on_commit(relay_soon, robust=True)
    return True


def certificate_version_revoke(*, version_id: int) -> None:
    """Revoke a version whose revocation was asked for (the revoke_version task).

    Raises AcmeError when trying again later can help; a permanent refusal is noted on the version.
    """
    # The key is loaded only where it signs (keyCompromise).
    unrevoked = CertificateVersion.objects.filter(pk=version_id, revoked_at__isnull=True).defer("private_key_pem")
    version = unrevoked.exclude(revocation_reason="").first()
    if version is None:
        return  # deleted, revoked already, or never asked for
    try:
        _revoke_at_ca(version)
    except AcmeError as e:
        if not e.permanent:
            raise
        certificate_revocation_failed(version_id=version.pk, error=f"the CA refused to revoke it: {e}")
        return
    _record_revoked(version)


def certificate_revocation_failed(*, version_id: int, error: str) -> None:
    """Note why a version could not be revoked; asking again (the revoke action) tries again."""
    CertificateVersion.objects.filter(pk=version_id, revoked_at__isnull=True).update(revocation_error=error)


def _revoke_before_delete(certificate: Certificate) -> None:
    if certificate.type != Certificate.Type.LETS_ENCRYPT:
        raise Invalid({"revoke": ["only Let's Encrypt certificates issued by CertHub can be revoked here; "
                                  "delete without revoke=true"]})  # fmt: skip
    unrevoked = CertificateVersion.objects.filter(pk=certificate.current_version_id, revoked_at__isnull=True)
    version = unrevoked.defer("private_key_pem").first()
    if version is None:
        return  # never issued, or revoked already
    # Noted only once the CA confirms: the certificate and its versions go right after.
    version.revocation_reason = version.revocation_reason or CESSATION_OF_OPERATION
    try:
        _revoke_at_ca(version)
    except AcmeError as e:
        if not e.permanent:
            raise CaUnavailable(
                "The CA cannot be reached to revoke the certificate; nothing was deleted. Try again later, "
                "or delete it without revoke=true.",
                retry_after=e.retry_after,
            ) from e
        raise Invalid({"revoke": [f"the CA refused to revoke it ({e}); nothing was deleted"]}) from e
    _record_revoked(version)


def certificate_set_key_type(*, certificate: Certificate, key_type: Any) -> Certificate:
    """Change the key type; it takes effect at the next renewal."""
    return certificate_update(certificate=certificate, data={"key_type": key_type})


def certificate_update(*, certificate: Certificate, data: dict[str, Any]) -> Certificate:
    """Change `key_type` and/or `profile`; they take effect at the next renewal."""
    if certificate.type != Certificate.Type.LETS_ENCRYPT:
        field = "key_type" if "key_type" in data else "profile"
        raise Invalid({field: ["only Let's Encrypt certificates are issued by us"]})
    changes = {}
    if "key_type" in data:
        changes["key_type"] = _clean_key_type(data["key_type"])
    if "profile" in data:
        changes["profile"] = _clean_profile(data["profile"])
    Certificate.objects.filter(pk=certificate.pk).update(**changes)
    for field, value in changes.items():
        setattr(certificate, field, value)
    return certificate


def _clean_profile(profile: Any) -> str:
    """A profile the CA offers, or "" for its default."""
    if profile in (None, ""):
        return ""
    if not isinstance(profile, str):
        raise Invalid({"profile": ["must be a string naming one of the CA's profiles"]})
    try:
        offered = accounts.session().profiles()
    except AcmeError:
        raise Invalid({"profile": ["the CA cannot be reached to check its profiles; try again later"]}) from None
    if not offered:
        raise Invalid({"profile": ["the CA offers no profiles; leave profile out"]})
    if profile not in offered:
        raise Invalid({"profile": [f"must be one of the CA's profiles: {', '.join(sorted(offered))}"]})
    return profile


def _check_ca_limits(names: list[str]) -> None:
    """Refuse at once what the CA would refuse for these names (the limits a customer can reach)."""
    try:
        limits.check(
            accounts.account_for(settings.ACME_DIRECTORY_URL), names, limits=(limits.PER_DOMAIN, limits.EXACT_SET)
        )
    except limits.LimitReached as e:
        error = Invalid({"dns_names": [f"{e}. Try again then"]})
        error.code = "ca_rate_limit"
        raise error from None


def certificate_renew_now(*, certificate: Certificate) -> Issuance:
    from certificates.renewal import renew_now

    if certificate.type != Certificate.Type.LETS_ENCRYPT:
        raise Invalid({"type": ["custom certificates are renewed by uploading a new version"]})
    _check_ca_limits(certificate.dns_names)
    issuance = renew_now(certificate)
    if issuance is not None:
        return issuance
    with transaction.atomic():
        certificate = Certificate.objects.select_for_update().get(pk=certificate.pk)
        if certificate.issuances.exclude(step__in=[Issuance.Step.DONE, Issuance.Step.FAILED]).exists():
            raise Invalid({"type": ["an issuance for this certificate is already under way"]})
        current = certificate.current_version
        stopped = certificate.state == Certificate.State.ERROR or (current is not None and current.revoked_at)
        if current is not None and not stopped:
            raise Invalid({"type": ["a renewal is being scheduled; try again in a moment"]})
        # Its first issuance failed (nothing was ever issued), it expired while renewals kept failing,
        # or it was revoked for cessationOfOperation: renewals stopped, and "renew" starts them again.
        if current is None or certificate.state == Certificate.State.ERROR:
            certificate.state = Certificate.State.PENDING
        certificate.last_error = ""
        certificate.save(update_fields=["state", "last_error"])
        return issuance_start(certificate=certificate, reason="issue" if current is None else "renew_now")


def custom_certificate_upload(*, team: Team, name: str, data: dict[str, Any]) -> Certificate:
    """Validate and store a customer's own certificate as verified; it is never renewed."""
    from certificates.custom import validate_custom

    if data.get("dns_names") not in (None, [], ""):
        raise Invalid({"dns_names": ["comes from the certificate itself; leave it out"]})
    validated = validate_custom(data)
    if Certificate.objects.filter(team=team, name=name).exists():
        raise Invalid({"name": [NAME_TAKEN]})
    try:
        with transaction.atomic():
            certificate = Certificate.objects.create(
                team=team, name=name, type=Certificate.Type.CUSTOM, dns_names=validated.dns_names,
                names_key=validation.names_key(validated.dns_names), key_type=validated.key_type,
                state=Certificate.State.VERIFIED,
            )  # fmt: skip
            _store_custom_version(certificate, validated)
    except IntegrityError:  # the same name created meanwhile
        raise Invalid({"name": [NAME_TAKEN]}) from None
    return certificate


def custom_certificate_replace(*, certificate: Certificate, data: dict[str, Any]) -> Certificate:
    """Upload new PEMs under the same id: a new version, published like a renewal."""
    from certificates.custom import validate_custom

    if certificate.type != Certificate.Type.CUSTOM:
        raise Invalid({"type": ["only custom certificates take uploaded versions"]})
    validated = validate_custom(data)
    with transaction.atomic():
        certificate = Certificate.objects.select_for_update().get(pk=certificate.pk)
        certificate.dns_names = validated.dns_names
        certificate.names_key = validation.names_key(validated.dns_names)
        certificate.key_type = validated.key_type
        certificate.state = Certificate.State.VERIFIED
        certificate.last_error = ""
        _store_custom_version(certificate, validated)
    return certificate


def _store_custom_version(certificate: Certificate, validated) -> None:
    from certificates import keys
    from certificates.issuance import relay_soon
    from certificates.models import CertificateVersion

    facts = keys.certificate_facts(validated.fullchain_pem)
    version = CertificateVersion.objects.create(
        certificate=certificate, serial=facts.serial, not_before=facts.not_before, not_after=facts.not_after,
        key_type=validated.key_type, sha1_fingerprint=facts.sha1_fingerprint,
        sha256_fingerprint=facts.sha256_fingerprint, leaf_pem=facts.leaf_pem, chain_pem=facts.chain_pem,
        private_key_pem=validated.private_key_pem, renew_at=facts.not_after,  # never renewed by us
    )  # fmt: skip
    certificate.current_version = version
    certificate.renew_at = None
    certificate.save()
    events.record_event(kind=events.VERSION_CREATED, certificate=certificate, version=version)
    transaction.on_commit(relay_soon, robust=True)


def names_outside_zones(certificate: Certificate) -> list[str]:
    """The certificate's names that no zone of its team hosts (allowed for custom certificates)."""
    hosted = validation.hosted_zone_names(certificate.team_id, certificate.dns_names)
    return validation.names_outside(certificate.dns_names, hosted)
