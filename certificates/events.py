"""The events certificates publish: built here from named public fields, recorded through the outbox."""

from certhub import outbox
from certhub.models import OutboxEvent
from certificates.models import Certificate, CertificateVersion

STREAM = "certhub.certificates"
VERSION_CREATED = "certificate.version_created"
FAILED = "certificate.failed"
DELETED = "certificate.deleted"
REVOKED = "certificate.revoked"  # the CA confirmed it; `version` is the revoked one, `reason` its RFC 5280 name
KINDS = (VERSION_CREATED, FAILED, DELETED, REVOKED)


def record_event(
    *, kind: str, certificate: Certificate, version: CertificateVersion | None = None, reason: str = ""
) -> OutboxEvent:
    """Write an event about `certificate` in the caller's open transaction."""
    if kind not in KINDS:
        raise ValueError(f"unknown certificate event {kind!r}")
    return outbox.record(
        stream=STREAM,
        kind=kind,
        team_id=certificate.team_id,
        subject_id=certificate.pk,
        payload=event_payload(certificate=certificate, version=version, reason=reason),
    )


def event_payload(*, certificate: Certificate, version: CertificateVersion | None, reason: str) -> dict:
    """Build a payload from named public fields only: never a key, never a whole model."""
    payload = {
        "certificate_id": str(certificate.pk),
        "team_id": certificate.team_id,
        "name": certificate.name,
        "dns_names": list(certificate.dns_names),
        "state": certificate.state,
        "version": None,
        "reason": reason,
    }
    if version is not None:
        payload["version"] = {
            # Consumers load the certificate and key by this id from the database, not from the event.
            "id": version.pk,
            "serial": version.serial,
            "not_before": version.not_before.isoformat(),
            "not_after": version.not_after.isoformat(),
            "sha1_fingerprint": version.sha1_fingerprint,
            "sha256_fingerprint": version.sha256_fingerprint,
            "key_type": version.key_type,
        }
    return payload
