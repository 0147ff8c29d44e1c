"""Reads the product pages share, and where a certificate is served, for the certificate's own page.

The certificate page reaches `where_served` through CERTHUB_CERTIFICATE_WHERE_SERVED (a dotted
path), so certificates never imports distribution: it gets plain values and links, no models.
"""

from datetime import datetime
from typing import TypedDict

from django.db.models import QuerySet
from django.urls import reverse

from certhub.models import Team
from certificates.models import Certificate
from distribution.models import CdnEndpoint, Deployment, LoadBalancer, Node

RECENT_DEPLOYMENTS = 50
TARGET_WORDS = {
    Deployment.Target.LOAD_BALANCER: "Load balancer",
    Deployment.Target.CDN_ENDPOINT: "CDN endpoint",
    Deployment.Target.DATABASE_NODE: "Database node",
}


class Use(TypedDict):
    kind: str
    name: str
    url: str  # "" when the thing has no page of the team's


class DeploymentRow(TypedDict):
    version_id: int
    kind: str
    name: str
    url: str
    status: str
    attempts: int
    last_error: str
    deployed_at: datetime | None
    verified_at: datetime | None
    served_serial: str


class WhereServed(TypedDict):
    uses: list[Use]
    deployments: list[DeploymentRow]


def target_url(kind: str, target_id: str) -> str:
    if kind == Deployment.Target.LOAD_BALANCER:
        return reverse("distribution:load_balancer_detail", kwargs={"lb_id": target_id})
    if kind == Deployment.Target.CDN_ENDPOINT:
        return reverse("distribution:cdn_endpoint_detail", kwargs={"endpoint_id": target_id})
    return ""


def deployments_to(team: Team, kind: str, target_id) -> QuerySet:
    """The latest deployments to one of the team's targets, newest first, without any PEM."""
    return (
        Deployment.objects.filter(team=team, target_kind=kind, target_id=str(target_id))
        .select_related("certificate", "version")
        .only(
            "status", "attempts", "last_error", "created_at", "deployed_at", "verified_at", "served_serial",
            "certificate__name", "version__serial",
        )[:RECENT_DEPLOYMENTS]
    )  # fmt: skip


def where_served(certificate: Certificate) -> WhereServed:
    """What uses the certificate, and every deployment of its versions, with links to the products' pages."""
    team_id = certificate.team_id
    lbs = LoadBalancer.objects.filter(team_id=team_id, forwarding_rules__certificate=certificate).distinct()
    endpoints = CdnEndpoint.objects.filter(team_id=team_id, certificate=certificate)
    uses: list[Use] = [
        {"kind": "Load balancer", "name": lb.name, "url": target_url(Deployment.Target.LOAD_BALANCER, lb.pk)}
        for lb in lbs
    ]
    uses += [
        {"kind": "CDN endpoint", "name": ep.endpoint, "url": target_url(Deployment.Target.CDN_ENDPOINT, ep.pk)}
        for ep in endpoints
    ]
    uses += [
        {"kind": "Database node", "name": node.name, "url": ""} for node in Node.objects.filter(certificate=certificate)
    ]
    rows = list(Deployment.objects.filter(certificate=certificate, team_id=team_id).order_by("-created_at", "-id"))
    # Deployments to products deleted since keep their record, without a link to a page that is gone.
    live = _live_targets(team_id, rows)
    deployments: list[DeploymentRow] = [
        {
            "version_id": d.version_id,
            "kind": TARGET_WORDS.get(d.target_kind, d.target_kind),
            "name": d.target_name,
            "url": target_url(d.target_kind, d.target_id) if (d.target_kind, d.target_id) in live else "",
            "status": d.status,
            "attempts": d.attempts,
            "last_error": d.last_error,
            "deployed_at": d.deployed_at,
            "verified_at": d.verified_at,
            "served_serial": d.served_serial,
        }
        for d in rows
    ]
    return {"uses": uses, "deployments": deployments}


def _live_targets(team_id: int, deployments: list[Deployment]) -> set[tuple[str, str]]:
    """The (kind, id) of the deployments' targets that still exist in the team."""
    ids = {kind: {d.target_id for d in deployments if d.target_kind == kind} for kind in TARGET_WORDS}
    lbs = LoadBalancer.objects.filter(team_id=team_id, pk__in=ids[Deployment.Target.LOAD_BALANCER])
    endpoints = CdnEndpoint.objects.filter(team_id=team_id, pk__in=ids[Deployment.Target.CDN_ENDPOINT])
    return {(Deployment.Target.LOAD_BALANCER, str(pk)) for pk in lbs.values_list("pk", flat=True)} | {
        (Deployment.Target.CDN_ENDPOINT, str(pk)) for pk in endpoints.values_list("pk", flat=True)
    }
