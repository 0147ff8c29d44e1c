"""Load balancers: validate DigitalOcean-shaped requests, place them on a node, keep the node in step.

Each load balancer gets its own address from CERTHUB_LB_ADDRESS_POOL, and its node binds every
rule's entry port there. A change of listeners bumps the node's configuration (one reload); a
certificate attached is deployed at once, its later versions through the outbox.
"""

import ipaddress
import re
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Count

from certhub.errors import Invalid
from certhub.models import Team
from certificates.models import Certificate
from distribution import attach, delivery
from distribution.addresses import check_public
from distribution.delivery import TargetRef
from distribution.models import Deployment, ForwardingRule, LoadBalancer, Node

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]{0,254}")
REGION = re.compile(r"[a-z]{2,6}[0-9]{1,2}")
TLS_ENTRY = ("https", "http2")
ENTRY_PROTOCOLS = ("http", "https", "http2", "tcp")
UNSUPPORTED_PROTOCOLS = ("http3", "udp")
MAX_RULES = 25
MAX_TARGETS = 100
ALGORITHMS = ("round_robin", "least_connections")
SIZES = ("lb-small", "lb-medium", "lb-large")


def _port(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise Invalid({field: ["must be a port number from 1 to 65535"]})
    return value


def _bool(value: Any, field: str, default: bool = False) -> bool:
    if value is None:
        return default
    if not isinstance(value, bool):
        raise Invalid({field: ["must be true or false"]})
    return value


def clean_rule(team: Team, raw: Any, field: str) -> dict[str, Any]:
    """One forwarding rule, DigitalOcean's six fields; the certificate must be the team's."""
    if not isinstance(raw, dict):
        raise Invalid({field: ["must be an object"]})
    rule: dict[str, Any] = {}
    for key in ("entry_protocol", "target_protocol"):
        protocol = raw.get(key)
        if protocol in UNSUPPORTED_PROTOCOLS:
            raise Invalid({f"{field}.{key}": [f"{protocol} is not supported; use one of {', '.join(ENTRY_PROTOCOLS)}"]})
        if protocol not in ENTRY_PROTOCOLS:
            raise Invalid({f"{field}.{key}": [f"must be one of {', '.join(ENTRY_PROTOCOLS)}"]})
        rule[key] = protocol
    rule["entry_port"] = _port(raw.get("entry_port"), f"{field}.entry_port")
    rule["target_port"] = _port(raw.get("target_port"), f"{field}.target_port")
    rule["tls_passthrough"] = _bool(raw.get("tls_passthrough"), f"{field}.tls_passthrough")
    certificate = attach.clean_certificate(team, raw.get("certificate_id"), field=f"{field}.certificate_id")
    if rule["tls_passthrough"]:
        if rule["entry_protocol"] != "https" or rule["target_protocol"] != "https":
            raise Invalid({f"{field}.tls_passthrough": ["needs https as both entry_protocol and target_protocol"]})
        if certificate is not None:
            raise Invalid({f"{field}.certificate_id": ["must be empty with tls_passthrough: the targets hold the key"]})
    elif rule["entry_protocol"] in TLS_ENTRY and certificate is None:
        raise Invalid(
            {f"{field}.certificate_id": [f"is required for {rule['entry_protocol']} entry (or tls_passthrough)"]}
        )
    elif rule["entry_protocol"] not in TLS_ENTRY and certificate is not None:
        raise Invalid(
            {f"{field}.certificate_id": [f"is only used with https or http2 entry, not {rule['entry_protocol']}"]}
        )
    rule["certificate"] = certificate
    return rule


def clean_rules(team: Team, raw: Any, field: str = "forwarding_rules") -> list[dict[str, Any]]:
    if not isinstance(raw, list) or not raw:
        raise Invalid({field: ["must be a list of at least one forwarding rule"]})
    if len(raw) > MAX_RULES:
        raise Invalid({field: [f"must have at most {MAX_RULES} rules"]})
    rules = [clean_rule(team, item, f"{field}[{index}]") for index, item in enumerate(raw)]
    ports = [rule["entry_port"] for rule in rules]
    duplicates = sorted({port for port in ports if ports.count(port) > 1})
    if duplicates:
        raise Invalid({field: [f"entry_port {duplicates[0]} is used by more than one rule"]})
    return rules


def clean_targets(raw: Any) -> list[str]:
    if raw in (None, ""):
        return []
    if not isinstance(raw, list) or len(raw) > MAX_TARGETS:
        raise Invalid({"target_addresses": [f"must be a list of at most {MAX_TARGETS} IP addresses"]})
    addresses = []
    for index, item in enumerate(raw):
        try:
            address = ipaddress.ip_address(item if isinstance(item, str) else "")
        except ValueError:
            raise Invalid({f"target_addresses[{index}]": ["must be an IPv4 or IPv6 address"]}) from None
        if getattr(address, "scope_id", None) is not None:  # "fe80::1%eth0": the node's interfaces are not yours
            raise Invalid({f"target_addresses[{index}]": ["must be an address without a %scope"]})
        check_public(str(address), f"target_addresses[{index}]")
        addresses.append(str(address))
    return sorted(set(addresses), key=addresses.index)


def clean(team: Team, data: Any) -> dict[str, Any]:
    """A whole load balancer request (create, or PUT: omitted fields take their defaults)."""
    if not isinstance(data, dict):
        raise Invalid({"": ["the request body must be a JSON object"]})
    name = data.get("name")
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise Invalid({"name": ["is required: letters, digits, dashes and periods, at most 255"]})
    region = data.get("region")
    if isinstance(region, dict):  # python-digitalocean may send back the object it read
        region = region.get("slug")
    if not isinstance(region, str) or not REGION.fullmatch(region):
        raise Invalid({"region": ["is required: a region slug such as nyc3"]})
    droplet_ids = data.get("droplet_ids")
    if droplet_ids not in (None, []) and not (
        isinstance(droplet_ids, list) and all(isinstance(d, int) and not isinstance(d, bool) for d in droplet_ids)
    ):
        raise Invalid({"droplet_ids": ["must be a list of integers (ignored here: use target_addresses)"]})
    if droplet_ids and data.get("tag"):
        raise Invalid({"tag": ["give either tag or droplet_ids, not both"]})
    cleaned = {
        "name": name,
        "region": region,
        "rules": clean_rules(team, data.get("forwarding_rules")),
        "redirect_http_to_https": _bool(data.get("redirect_http_to_https"), "redirect_http_to_https"),
        "target_addresses": clean_targets(data.get("target_addresses")),
        "algorithm": data.get("algorithm") or "round_robin",
        "size": data.get("size") or "lb-small",
        "size_unit": data.get("size_unit") or 1,
        "http_idle_timeout_seconds": data.get("http_idle_timeout_seconds") or 60,
        "health_check": _health_check(data.get("health_check")),
        "sticky_sessions": _sticky_sessions(data.get("sticky_sessions")),
    }
    if cleaned["algorithm"] not in ALGORITHMS:
        raise Invalid({"algorithm": [f"must be one of {', '.join(ALGORITHMS)}"]})
    if cleaned["size"] not in SIZES:
        raise Invalid({"size": [f"must be one of {', '.join(SIZES)}"]})
    size_unit = cleaned["size_unit"]
    if isinstance(size_unit, bool) or not isinstance(size_unit, int) or not 1 <= size_unit <= 100:
        raise Invalid({"size_unit": ["must be an integer from 1 to 100"]})
    timeout = cleaned["http_idle_timeout_seconds"]
    if isinstance(timeout, bool) or not isinstance(timeout, int) or not 30 <= timeout <= 600:
        raise Invalid({"http_idle_timeout_seconds": ["must be an integer from 30 to 600"]})
    return cleaned


HEALTH_CHECK_DEFAULTS = {
    "protocol": "http", "port": 80, "path": "/", "check_interval_seconds": 10, "response_timeout_seconds": 5,
    "healthy_threshold": 3, "unhealthy_threshold": 5,
}  # fmt: skip


def _health_check(raw: Any) -> dict[str, Any]:
    if raw in (None, {}):
        return dict(HEALTH_CHECK_DEFAULTS)
    if not isinstance(raw, dict):
        raise Invalid({"health_check": ["must be an object"]})
    check = dict(HEALTH_CHECK_DEFAULTS)
    for key, default in HEALTH_CHECK_DEFAULTS.items():
        value = raw.get(key)
        if value is None:
            continue
        if type(value) is not type(default):
            raise Invalid({f"health_check.{key}": [f"must be a {type(default).__name__}"]})
        check[key] = value
    if check["protocol"] not in ("http", "https", "tcp"):
        raise Invalid({"health_check.protocol": ["must be http, https or tcp"]})
    return check


def _sticky_sessions(raw: Any) -> dict[str, Any]:
    if raw in (None, {}):
        return {"type": "none"}
    if not isinstance(raw, dict) or raw.get("type", "none") not in ("none", "cookies"):
        raise Invalid({"sticky_sessions.type": ["must be none or cookies"]})
    if raw.get("type", "none") == "none":
        return {"type": "none"}
    ttl = raw.get("cookie_ttl_seconds") or 300
    name = raw.get("cookie_name") or "DO-LB"
    if isinstance(ttl, bool) or not isinstance(ttl, int) or not 1 <= ttl <= 2_592_000:
        raise Invalid({"sticky_sessions.cookie_ttl_seconds": ["must be a number of seconds up to 30 days"]})
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_-]{1,40}", name):
        raise Invalid({"sticky_sessions.cookie_name": ["must be 1 to 40 letters, digits, '-' or '_'"]})
    return {"type": "cookies", "cookie_name": name, "cookie_ttl_seconds": ttl}


def _pick_node() -> Node:
    node = (
        Node.objects.filter(kind=Node.Kind.HAPROXY, active=True)
        .annotate(load=Count("load_balancers"))
        .order_by("load", "pk")
        .first()
    )
    if node is None:
        raise Invalid({"region": ["no load balancer node is running; an operator must start one (run_node haproxy)"]})
    return node


def _free_address() -> str:
    pool = ipaddress.ip_network(settings.CERTHUB_LB_ADDRESS_POOL)
    used = set(LoadBalancer.objects.values_list("ip", flat=True))
    for address in pool.hosts():
        if str(address) not in used:
            return str(address)
    raise Invalid({"": ["the platform has no load balancer address left; an operator must widen the pool"]})


def load_balancer_create(*, team: Team, data: Any) -> LoadBalancer:
    cleaned = clean(team, data)
    if LoadBalancer.objects.filter(team=team, name=cleaned["name"]).exists():
        raise Invalid({"name": ["your team already has a load balancer with this name"]})
    node = _pick_node()
    for _ in range(5):  # two creates may pick the same free address: the unique ip decides
        try:
            with transaction.atomic():
                lb = LoadBalancer.objects.create(team=team, node=node, ip=_free_address(), **_fields(cleaned))
                _replace_rules(lb, cleaned["rules"])
                _changed(lb)
            return lb
        except IntegrityError as e:
            if LoadBalancer.objects.filter(team=team, name=cleaned["name"]).exists():
                raise Invalid({"name": ["your team already has a load balancer with this name"]}) from e
    raise Invalid({"": ["could not allocate an address; try again"]})


def load_balancer_update(*, lb: LoadBalancer, data: Any) -> LoadBalancer:
    """PUT: the body replaces the load balancer's settings (omitted fields take their defaults).

    Except `target_addresses`, CertHub's addition: DigitalOcean's clients never send it (python-digitalocean's
    save() sends back only DigitalOcean's keys), so an omitted list keeps the targets; `[]` clears them.
    """
    cleaned = clean(lb.team, data)
    if "target_addresses" not in data:
        cleaned["target_addresses"] = lb.target_addresses
    if LoadBalancer.objects.filter(team=lb.team, name=cleaned["name"]).exclude(pk=lb.pk).exists():
        raise Invalid({"name": ["your team already has a load balancer with this name"]})
    with transaction.atomic():
        for key, value in _fields(cleaned).items():
            setattr(lb, key, value)
        lb.save()
        _replace_rules(lb, cleaned["rules"])
        _changed(lb)
    return lb


def rules_add(*, lb: LoadBalancer, data: Any) -> None:
    rules = clean_rules(lb.team, (data or {}).get("forwarding_rules") if isinstance(data, dict) else None)
    with transaction.atomic():
        taken = set(lb.forwarding_rules.values_list("entry_port", flat=True))
        clash = sorted(taken & {rule["entry_port"] for rule in rules})
        if clash:
            raise Invalid({"forwarding_rules": [f"entry_port {clash[0]} already has a rule on this load balancer"]})
        if lb.forwarding_rules.count() + len(rules) > MAX_RULES:
            raise Invalid({"forwarding_rules": [f"a load balancer has at most {MAX_RULES} rules"]})
        for rule in rules:
            ForwardingRule.objects.create(load_balancer=lb, **rule)
        _changed(lb)


def rules_remove(*, lb: LoadBalancer, data: Any) -> None:
    """Remove the rules given (matched by entry protocol and port, as DigitalOcean matches them)."""
    raw = (data or {}).get("forwarding_rules") if isinstance(data, dict) else None
    if not isinstance(raw, list) or not raw:
        raise Invalid({"forwarding_rules": ["must be a list of at least one forwarding rule"]})
    with transaction.atomic():
        matched = []
        for index, item in enumerate(raw):
            if not isinstance(item, dict):
                raise Invalid({f"forwarding_rules[{index}]": ["must be an object"]})
            port = _port(item.get("entry_port"), f"forwarding_rules[{index}].entry_port")
            protocol = item.get("entry_protocol")
            if protocol not in ENTRY_PROTOCOLS:
                raise Invalid(
                    {f"forwarding_rules[{index}].entry_protocol": [f"must be one of {', '.join(ENTRY_PROTOCOLS)}"]}
                )
            rule = lb.forwarding_rules.filter(entry_port=port, entry_protocol=protocol).first()
            if rule is None:
                raise Invalid({f"forwarding_rules[{index}]": ["no such rule on this load balancer"]})
            matched.append(rule.pk)
        if lb.forwarding_rules.exclude(pk__in=matched).count() == 0:
            raise Invalid({"forwarding_rules": ["a load balancer keeps at least one rule"]})
        ForwardingRule.objects.filter(pk__in=matched).delete()
        _changed(lb)


def load_balancer_delete(*, lb: LoadBalancer) -> None:
    with transaction.atomic():
        node_id = lb.node_id
        Deployment.objects.filter(
            target_kind=Deployment.Target.LOAD_BALANCER, target_id=str(lb.pk), status=Deployment.Status.PENDING
        ).update(status=Deployment.Status.SUPERSEDED)
        lb.delete()
        delivery.node_changed(node_id)


def _fields(cleaned: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in cleaned.items() if key != "rules"}


def _replace_rules(lb: LoadBalancer, rules: list[dict[str, Any]]) -> None:
    lb.forwarding_rules.all().delete()
    ForwardingRule.objects.bulk_create([ForwardingRule(load_balancer=lb, **rule) for rule in rules])


def _changed(lb: LoadBalancer) -> None:
    """Reconfigure the node, and deploy each attached certificate's current version now."""
    delivery.node_changed(lb.node_id)
    target = TargetRef(Deployment.Target.LOAD_BALANCER, str(lb.pk), lb.name, lb.node_id)
    certificates = list(Certificate.objects.filter(forwarding_rules__load_balancer=lb).distinct())
    # A certificate no rule uses any more is not deployed there (its key stays off the node).
    Deployment.objects.filter(
        target_kind=Deployment.Target.LOAD_BALANCER, target_id=str(lb.pk), status=Deployment.Status.PENDING
    ).exclude(certificate__in=certificates).update(status=Deployment.Status.SUPERSEDED)
    for certificate in certificates:
        delivery.plan_current(target=target, certificate=certificate)
