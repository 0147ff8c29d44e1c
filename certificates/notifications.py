"""Email the team when a certificate is ready or needs attention."""

import logging

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import send_mail

from certificates.models import Certificate

log = logging.getLogger(__name__)


def _recipients(certificate: Certificate) -> list[str]:
    users = get_user_model().objects.filter(membership__team=certificate.team_id, is_active=True)
    return sorted({u.email for u in users if u.email})


def _send(certificate: Certificate, subject: str, body: str) -> None:
    recipients = _recipients(certificate)
    if not recipients:
        return
    try:
        send_mail(subject, body, settings.DEFAULT_FROM_EMAIL, recipients)
    except OSError as e:
        log.warning("email about certificate %s not sent: %s", certificate.pk, e)


def certificate_ready(certificate_id) -> None:
    certificate = Certificate.objects.select_related("current_version").filter(pk=certificate_id).first()
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
