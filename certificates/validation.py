"""Checks on a certificate request before anything is ordered."""

from typing import Any

from certhub.models import Team
from certhub.names import NameError_, is_hostname_label, is_ip_literal, is_public_suffix, parents, to_ascii
from dns_zones.models import Zone
from dns_zones.services import Invalid

MAX_NAMES = 100


def normalize_dns_name(raw: Any) -> str:
    """One requested name in canonical form; raises NameError_ with the reason."""
    if not isinstance(raw, str) or not raw.strip():
        raise NameError_("must be a non-empty string")
    if is_ip_literal(raw.strip()):
        raise NameError_("IP addresses cannot be in a certificate from this CA")
    name = to_ascii(raw)
    labels = name.split(".")
    if "*" in name:
        if labels[0] != "*" or "*" in ".".join(labels[1:]):
            raise NameError_("a wildcard must be the whole leftmost label, like *.example.com")
    base = ".".join(labels[1:]) if labels[0] == "*" else name
    if labels[0] == "*" and is_public_suffix(base):
        raise NameError_("a wildcard directly under a public suffix is not allowed")
    if "." not in base:
        raise NameError_("single-label names cannot be certified")
    for label in base.split("."):
        if "_" in label:
            raise NameError_("underscores are not allowed in certificate names")
        if not is_hostname_label(label):
            raise NameError_(f"label {label!r} may hold only letters, digits and inner hyphens")
    if is_public_suffix(base):
        raise NameError_("is a public suffix, which no one can hold a certificate for")
    return name


def clean_dns_names(raw: Any) -> list[str]:
    """The request's names normalised, de-duplicated and in order; raises Invalid."""
    if not isinstance(raw, list):
        raise Invalid({"dns_names": ["must be a list of domain names"]})
    # The cap first: a request with 40,000 names costs nothing to refuse.
    if len(raw) > MAX_NAMES:
        raise Invalid({"dns_names": [f"must hold from 1 to {MAX_NAMES} names"]})
    names: list[str] = []
    for item in raw:
        try:
            name = normalize_dns_name(item)
        except NameError_ as e:
            raise Invalid({"dns_names": [f"{str(item)[:80]!r} {e}"]}) from None
        if name not in names:
            names.append(name)
    if not 1 <= len(names) <= MAX_NAMES:
        raise Invalid({"dns_names": [f"must hold from 1 to {MAX_NAMES} names"]})
    return names


def hosted_zone_names(team_id: int, names: list[str]) -> set[str]:
    """The team's zones among the parents of names (one query)."""
    wanted = {p for name in names for p in parents(name.removeprefix("*."))}
    return set(Zone.objects.filter(team_id=team_id, name__in=wanted).values_list("name", flat=True))


def names_outside(names: list[str], hosted: set[str]) -> list[str]:
    """The names in none of the hosted zones (a wildcard counts as its base name)."""
    return [n for n in names if not hosted.intersection(parents(n.removeprefix("*.")))]


def check_names_hosted(team: Team, names: list[str]) -> None:
    """Every name must lie in a zone of the team (the same answer whoever hosts it otherwise)."""
    outside = names_outside(names, hosted_zone_names(team.pk, names))
    if outside:
        raise Invalid({"dns_names": [f"{outside[0]!r} is not in any DNS zone of your team; add the zone first"]})


def names_key(names: list[str]) -> str:
    return " ".join(sorted(names))
