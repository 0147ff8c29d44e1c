"""CDN endpoints: validate DigitalOcean-shaped requests, place them on an nginx edge, publish their names.

Each endpoint gets a host name in the platform's CDN zone (CERTHUB_CDN_ZONE) whose A record points
at its edge, so it resolves through CertHub's own DNS. The edge serves an endpoint once it has a
custom domain and a certificate with a version: a change of sites bumps the node's configuration
(one reload); an attached certificate is deployed at once, its later versions through the outbox.
"""

import ipaddress
import re
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Count

from certhub.errors import Invalid
from certhub.models import Team
from certhub.names import NameError_, is_hostname_label, is_within, to_ascii
from certificates.models import Certificate
from certificates.validation import normalize_dns_name
from distribution import attach, delivery, platform
from distribution.adapters import adapter_for
from distribution.addresses import check_public
from distribution.delivery import TargetRef
from distribution.models import CdnEndpoint, Deployment, Node

TTLS = (60, 600, 3600, 86400, 604800)
DEFAULT_TTL = 3600
ENDPOINT_LABEL_LENGTH = 12  # hex digits of the id: the endpoint's own label in the CDN zone
PLAIN_HTTP = "http://"
_HOST_PORT = re.compile(r"^(?P<host>[^:/\s]+)(?::(?P<port>[0-9]{1,5}))?$")
ORIGIN_HELP = "must be a host name, optionally with :port (https), or http://host[:port] for a plain-http origin"


def clean_origin(raw: Any) -> str:
    """The origin as stored: "host[:port]" (reached over https) or "http://host[:port]"."""
    if not isinstance(raw, str) or not raw.strip():
        raise Invalid({"origin": ["is required: " + ORIGIN_HELP]})
    value = raw.strip()
    scheme = ""
    if value.lower().startswith(PLAIN_HTTP):
        scheme, value = PLAIN_HTTP, value[len(PLAIN_HTTP) :]
    elif value.lower().startswith("https://"):
        value = value[len("https://") :]
    match = _HOST_PORT.fullmatch(value.removesuffix("/"))  # a path beyond "/" is not an origin
    if match is None:
        raise Invalid({"origin": [ORIGIN_HELP]})
    host, port = match["host"], match["port"]
    if port is not None and not 1 <= int(port) <= 65535:
        raise Invalid({"origin": ["port must be from 1 to 65535"]})
    host = _origin_host(host)
    check_public(host, "origin")
    return f"{scheme}{host}" + (f":{int(port)}" if port is not None else "")


def _origin_host(raw: str) -> str:
    """An IPv4 address or a dotted host name (A-labels), lowercase."""
    try:
        return str(ipaddress.IPv4Address(raw))
    except ValueError:
        pass
    try:
        host = to_ascii(raw)
    except NameError_ as e:
        raise Invalid({"origin": [f"{e}; {ORIGIN_HELP}"]}) from None
    if "." not in host or not all(is_hostname_label(label) for label in host.split(".")):
        raise Invalid({"origin": [ORIGIN_HELP]})
    return host


def origin_parts(origin: str) -> tuple[str, str]:
    """The scheme nginx speaks to a stored origin, and its "host[:port]"."""
    if origin.startswith(PLAIN_HTTP):
        return "http", origin[len(PLAIN_HTTP) :]
    return "https", origin


def clean_ttl(raw: Any) -> int:
    if raw is None:
        return DEFAULT_TTL
    if isinstance(raw, bool) or not isinstance(raw, int) or raw not in TTLS:
        raise Invalid({"ttl": [f"must be one of {', '.join(str(t) for t in TTLS)}"]})
    return raw


def clean_custom_domain(raw: Any) -> str:
    if raw in (None, ""):
        return ""
    try:
        name = normalize_dns_name(raw)
    except NameError_ as e:
        raise Invalid({"custom_domain": [str(e)]}) from None
    if name.startswith("*."):
        raise Invalid({"custom_domain": ["must be one host name, not a wildcard"]})
    if is_within(name, settings.CERTHUB_CDN_ZONE):
        raise Invalid({"custom_domain": [f"names under {settings.CERTHUB_CDN_ZONE} belong to the platform"]})
    return name


def _check_pair(certificate: Certificate | None, custom_domain: str, *, exclude_id=None) -> None:
    """A custom domain and its certificate come together; the certificate covers it; the domain is free."""
    if custom_domain and certificate is None:
        raise Invalid({"certificate_id": ["is required with custom_domain: the certificate served for it"]})
    if certificate is not None and not custom_domain:
        raise Invalid({"custom_domain": ["is required with certificate_id: the name the certificate is served for"]})
    if certificate is not None:
        attach.check_covers(certificate, [custom_domain], field="certificate_id")
    if custom_domain and CdnEndpoint.objects.filter(custom_domain=custom_domain).exclude(pk=exclude_id).exists():
        raise Invalid({"custom_domain": ["is already the custom domain of another CDN endpoint"]})


def _pick_node() -> Node:
    node = (
        Node.objects.filter(kind=Node.Kind.NGINX, active=True, address__isnull=False, port__isnull=False)
        .annotate(load=Count("cdn_endpoints"))
        .order_by("load", "pk")
        .first()
    )
    if node is None:
        raise Invalid({"": ["no CDN edge node is running; an operator must start one (run_node nginx)"]})
    return node


def endpoint_name(endpoint: CdnEndpoint) -> str:
    return f"{endpoint.pk.hex[:ENDPOINT_LABEL_LENGTH]}.{settings.CERTHUB_CDN_ZONE}"


def target_of(endpoint: CdnEndpoint) -> TargetRef:
    return TargetRef(Deployment.Target.CDN_ENDPOINT, str(endpoint.pk), endpoint.endpoint, endpoint.node_id)


def cdn_endpoint_create(*, team: Team, data: Any) -> CdnEndpoint:
    if not isinstance(data, dict):
        raise Invalid({"": ["the request body must be a JSON object"]})
    origin = clean_origin(data.get("origin"))
    ttl = clean_ttl(data.get("ttl"))
    custom_domain = clean_custom_domain(data.get("custom_domain"))
    certificate = attach.clean_certificate(team, data.get("certificate_id"))
    _check_pair(certificate, custom_domain)
    node = _pick_node()
    for _ in range(5):  # a new id whose label another endpoint already has (or a race on custom_domain)
        endpoint = CdnEndpoint(
            team=team, node=node, origin=origin, ttl=ttl, custom_domain=custom_domain, certificate=certificate
        )
        endpoint.endpoint = endpoint_name(endpoint)
        try:
            with transaction.atomic():
                endpoint.save(force_insert=True)
                zone = platform.platform_zone(settings.CERTHUB_CDN_ZONE)
                platform.publish_address(zone=zone, name=endpoint.endpoint, address=node.address)
                _changed(endpoint)
            return endpoint
        except IntegrityError as e:
            if custom_domain and CdnEndpoint.objects.filter(custom_domain=custom_domain).exists():
                raise Invalid({"custom_domain": ["is already the custom domain of another CDN endpoint"]}) from e
    raise Invalid({"": ["could not allocate an endpoint name; try again"]})


def cdn_endpoint_update(*, endpoint: CdnEndpoint, data: Any) -> CdnEndpoint:
    """PUT: the fields given (ttl, certificate_id, custom_domain) are the change; the rest stay."""
    if not isinstance(data, dict):
        raise Invalid({"": ["the request body must be a JSON object"]})
    ttl = clean_ttl(data["ttl"]) if "ttl" in data else endpoint.ttl
    custom_domain = clean_custom_domain(data["custom_domain"]) if "custom_domain" in data else endpoint.custom_domain
    if "certificate_id" in data:
        certificate = attach.clean_certificate(endpoint.team, data["certificate_id"])
    else:
        certificate = endpoint.certificate
    _check_pair(certificate, custom_domain, exclude_id=endpoint.pk)
    previous_certificate_id = endpoint.certificate_id
    endpoint.ttl, endpoint.custom_domain, endpoint.certificate = ttl, custom_domain, certificate
    try:
        with transaction.atomic():
            endpoint.save(update_fields=["ttl", "custom_domain", "certificate"])
            if endpoint.certificate_id != previous_certificate_id:
                _supersede_pending(endpoint)  # the old certificate's deployments are moot
            _changed(endpoint)
    except IntegrityError as e:
        raise Invalid({"custom_domain": ["is already the custom domain of another CDN endpoint"]}) from e
    return endpoint


def cdn_endpoint_delete(*, endpoint: CdnEndpoint) -> None:
    with transaction.atomic():
        node_id = endpoint.node_id
        _supersede_pending(endpoint)
        zone = platform.platform_zone(settings.CERTHUB_CDN_ZONE)
        platform.withdraw_address(zone=zone, name=endpoint.endpoint)
        endpoint.delete()
        delivery.node_changed(node_id)


def cdn_cache_purge(*, endpoint: CdnEndpoint, data: Any) -> int:
    """Drop the edge's cached copies of the files named (paths, `*` patterns, "*" for all); return how many.

    Raises AdapterError when the edge cannot be reached.
    """
    files = data.get("files") if isinstance(data, dict) else None
    if not isinstance(files, list) or not files or not all(isinstance(f, str) and f for f in files):
        raise Invalid({"files": ['is required: a list of paths ("*" alone purges everything)']})
    if len(files) > 1000 or any(len(f) > 1024 for f in files):
        raise Invalid({"files": ["at most 1,000 paths of at most 1,024 characters"]})
    return adapter_for(endpoint.node).purge(endpoint, files)


def _supersede_pending(endpoint: CdnEndpoint) -> None:
    Deployment.objects.filter(
        target_kind=Deployment.Target.CDN_ENDPOINT, target_id=str(endpoint.pk), status=Deployment.Status.PENDING
    ).update(status=Deployment.Status.SUPERSEDED)


def _changed(endpoint: CdnEndpoint) -> None:
    """Reconfigure the edge, and deploy the attached certificate's current version now."""
    delivery.node_changed(endpoint.node_id)
    if endpoint.certificate is not None:
        delivery.plan_current(target=target_of(endpoint), certificate=endpoint.certificate)
