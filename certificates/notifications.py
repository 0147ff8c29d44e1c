"""Email the team when a certificate is ready or needs attention."""

import logging
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import send_mail
from django.db.models import F
from django.utils import timezone

from certificates.models import Certificate, CertificateVersion, with_current_version

log = logging.getLogger(__name__)


def _recipients(certificate: Certificate) -> list[str]:
    users = get_user_model().objects.filter(membership__team=certificate.team_id, is_active=True)
    return sorted(set(users.exclude(email="").values_list("email", flat=True)))


def _send(certificate: Certificate, subject: str, body: str) -> None:
    recipients = _recipients(certificate)
    if not recipients:
        return
    try:
        send_mail(subject, body, settings.DEFAULT_FROM_EMAIL, recipients)
    except OSError as e:
        log.warning("email about certificate %s not sent: %s", certificate.pk, e)


def certificate_ready(certificate_id) -> None:
    certificate = with_current_version(Certificate.objects).filter(pk=certificate_id).first()
    if certificate is None or certificate.current_version is None:
        return
    version = certificate.current_version
    _send(
        certificate,
        f"Certificate {certificate.name} is ready",
        f"Your certificate {certificate.name} for {', '.join(certificate.dns_names)} has been issued.\n"
        f"Valid until {version.not_after:%Y-%m-%d %H:%M} UTC; SHA-1 fingerprint {version.sha1_fingerprint}.\n"
        "CertHub renews it automatically.\n",
    )


def certificate_failed(certificate_id) -> None:
    certificate = Certificate.objects.filter(pk=certificate_id).first()
    if certificate is None:
        return
    _send(
        certificate,
        f"Certificate {certificate.name} needs your attention",
        f"We could not issue the certificate {certificate.name} for {', '.join(certificate.dns_names)}.\n\n"
        f"{certificate.last_error}\n",
    )


# Days before expiry at which the team is warned; custom certificates are never renewed by us,
# so their owners hear earlier and more often.
LETS_ENCRYPT_WARNING_DAYS = (7, 1)
CUSTOM_WARNING_DAYS = (30, 14, 7, 1)
RENEWAL_FAILURE_GRACE = timedelta(days=1)


def notification_sweep(*, now=None) -> int:
    """Send each due warning once; return how many emails went out."""
    now = now or timezone.now()
    sent = 0
    failing = Certificate.objects.filter(
        renewal_failing_since__lte=now - RENEWAL_FAILURE_GRACE, renewal_failure_notified=False
    ).select_related("team")
    for certificate in failing:
        if Certificate.objects.filter(pk=certificate.pk, renewal_failure_notified=False).update(
            renewal_failure_notified=True
        ):
            _send(
                certificate,
                f"Renewal of {certificate.name} keeps failing",
                f"We have been unable to renew {certificate.name} for over a day and keep trying.\n\n"
                f"{certificate.last_error}\n",
            )
            sent += 1
    horizon = now + timedelta(days=max(CUSTOM_WARNING_DAYS) + 1)
    expiring = (
        CertificateVersion.objects.filter(not_after__lte=horizon, certificate__current_version=F("pk"))
        .exclude(certificate__state=Certificate.State.ERROR)
        .exclude(revoked_at__isnull=False)  # revoked for good (cessationOfOperation): nothing to warn of
        .select_related("certificate__team")
        .defer("private_key_pem")
    )
    for version in expiring:
        certificate = version.certificate
        days = CUSTOM_WARNING_DAYS if certificate.type == Certificate.Type.CUSTOM else LETS_ENCRYPT_WARNING_DAYS
        left = version.not_after - now
        due = [d for d in days if left <= timedelta(days=d) and d not in version.warned_days]
        if left <= timedelta(0):
            sent += _mark_expired(certificate, version)
            continue
        if not due:
            continue
        version.warned_days = sorted({*version.warned_days, *due}, reverse=True)
        CertificateVersion.objects.filter(pk=version.pk).update(warned_days=version.warned_days)
        _send(
            certificate,
            f"Certificate {certificate.name} expires in {max(left.days, 0) or 'less than one'} day(s)",
            f"{certificate.name} ({', '.join(certificate.dns_names)}) expires on "
            f"{version.not_after:%Y-%m-%d %H:%M} UTC.\n{certificate.last_error}\n",
        )
        sent += 1
    return sent


def _mark_expired(certificate: Certificate, version: CertificateVersion) -> int:
    """An expired certificate shows as error with the reason; the team is told once."""
    reason = f"expired on {version.not_after:%Y-%m-%d %H:%M} UTC"
    if certificate.type == Certificate.Type.CUSTOM:
        reason += "; upload a renewed certificate under the same id"
    marked = (
        Certificate.objects.filter(pk=certificate.pk)
        .exclude(state=Certificate.State.ERROR)
        .update(state=Certificate.State.ERROR, last_error=reason)
    )
    if not marked:
        return 0
    _send(certificate, f"Certificate {certificate.name} has expired", f"{certificate.name} {reason}.\n")
    return 1
