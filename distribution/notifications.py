"""Email a team when a deployment of its certificate failed for good."""

import logging

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import send_mail

from distribution.models import Deployment

log = logging.getLogger(__name__)


def deployment_failed(deployment_id: int) -> None:
    deployment = Deployment.objects.select_related("certificate").filter(pk=deployment_id).first()
    if deployment is None or deployment.status != Deployment.Status.FAILED:
        return
    users = get_user_model().objects.filter(membership__team=deployment.team_id, is_active=True)
    recipients = sorted(set(users.exclude(email="").values_list("email", flat=True)))
    if not recipients:
        return
    kind = deployment.get_target_kind_display().replace("_", " ")
    try:
        send_mail(
            f"Certificate {deployment.certificate.name} could not be deployed to {deployment.target_name}",
            f"CertHub could not put the new version of your certificate {deployment.certificate.name} on the "
            f"{kind} {deployment.target_name} after {deployment.attempts} attempts.\n"
            f"Last error: {deployment.last_error}\n"
            "The target keeps serving the version it had. CertHub tries again when the certificate gets its "
            "next version, or at once when you save the product or attach the certificate again.\n",
            settings.DEFAULT_FROM_EMAIL,
            recipients,
        )
    except OSError as e:
        log.warning("email about deployment %s not sent: %s", deployment_id, e)
