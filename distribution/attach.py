"""Attaching a certificate to a product: only the team's own, and only one that covers the names."""

import uuid
from typing import Any

from certhub.errors import Invalid
from certhub.models import Team
from certificates.models import Certificate
from distribution.models import CdnEndpoint, LoadBalancer, Node


def covers(dns_names: list[str], name: str) -> bool:
    """True if a certificate for `dns_names` is valid for `name` (a wildcard covers one label)."""
    name = name.lower().rstrip(".")
    for pattern in dns_names:
        pattern = pattern.lower()
        if pattern == name:
            return True
        if pattern.startswith("*.") and "." in name and name.split(".", 1)[1] == pattern[2:]:
            return True
    return False


def clean_certificate(team: Team, raw: Any, *, field: str = "certificate_id") -> Certificate | None:
    """The team's certificate named by `raw` (None for empty); another team's is as unknown as a missing one."""
    if raw in (None, ""):
        return None
    try:
        certificate_id = uuid.UUID(str(raw))
    except ValueError:
        raise Invalid({field: ["must be the id of one of your certificates"]}) from None
    certificate = Certificate.objects.filter(team=team, pk=certificate_id).first()
    if certificate is None:
        raise Invalid({field: ["no certificate of your team has this id"]})
    if certificate.state == Certificate.State.ERROR and certificate.current_version_id is None:
        raise Invalid({field: [f"certificate {certificate.name!r} was never issued ({certificate.last_error})"]})
    return certificate


def check_covers(certificate: Certificate, names: list[str], *, field: str = "certificate_id") -> None:
    missing = [name for name in names if not covers(certificate.dns_names, name)]
    if missing:
        raise Invalid(
            {field: [f"certificate {certificate.name!r} does not cover {', '.join(missing)} "
                     f"(it covers {', '.join(certificate.dns_names)})"]}
        )  # fmt: skip


def users_of(certificate: Certificate) -> list[str]:
    """What uses the certificate, in words, for the 403 that refuses to delete it."""
    uses = [
        f"load balancer {lb.name!r} ({lb.pk})"
        for lb in LoadBalancer.objects.filter(forwarding_rules__certificate=certificate).distinct()
    ]
    uses += [f"CDN endpoint {ep.endpoint} ({ep.pk})" for ep in CdnEndpoint.objects.filter(certificate=certificate)]
    uses += [f"database node {node.name}" for node in Node.objects.filter(certificate=certificate)]
    return uses
