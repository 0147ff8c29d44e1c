"""Zones and records: validation and every change, each bumping the zone's serial."""

import ipaddress
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction

from certhub.errors import Invalid
from certhub.models import Team
from certhub.names import NameError_, is_within, normalize_zone_name, parents, to_ascii
from dns_zones import notify
from dns_zones.models import Record, Zone

MIN_TTL = 30
MAX_TTL = 2_147_483_647
MAX_TXT_BYTES = 4000
CAA_TAGS = ("issue", "issuewild", "iodef")
# Fields each type uses; others must be absent or null.
TYPE_FIELDS = {
    Record.Type.A: set(),
    Record.Type.AAAA: set(),
    Record.Type.CNAME: set(),
    Record.Type.TXT: set(),
    Record.Type.NS: set(),
    Record.Type.MX: {"priority"},
    Record.Type.SRV: {"priority", "weight", "port"},
    Record.Type.CAA: {"flags", "tag"},
}
CREATABLE_TYPES = [t.value for t in TYPE_FIELDS]


NAME_TAKEN = "is already in use"


@transaction.atomic
def zone_create(*, team: Team, name: Any, ip_address: Any = None) -> Zone:
    """Create a zone with its SOA and NS records, and an A record at the apex if asked."""
    try:
        zone_name = normalize_zone_name(name)
    except NameError_ as e:
        raise Invalid({"name": [str(e)]}) from None
    if ip_address not in (None, ""):
        try:
            address = ipaddress.IPv4Address(str(ip_address))
        except ValueError:
            raise Invalid({"ip_address": ["must be an IPv4 address"]}) from None
    # The platform's own zones (CDN endpoint and database names) belong to the platform's team.
    if team.name != settings.CERTHUB_PLATFORM_TEAM:
        for reserved in settings.CERTHUB_PLATFORM_ZONES:
            if reserved in parents(zone_name) or zone_name in parents(reserved):
                raise Invalid({"name": [NAME_TAKEN]})
    # A zone inside or above another zone would let one team answer for another's names.
    candidates = set(parents(zone_name))
    overlapping = (
        Zone.objects.filter(name__in=candidates).exists()
        or Zone.objects.filter(name__endswith="." + zone_name).exists()
    )
    if overlapping:
        raise Invalid({"name": [NAME_TAKEN]})
    ttl = settings.CERTHUB_DNS_DEFAULT_TTL
    nameservers = settings.CERTHUB_NAMESERVERS
    try:
        # One transaction: run_dns must never load the zone without its SOA and NS records (it
        # reloads a zone only when its serial changes, and adding these does not change it).
        with transaction.atomic():
            zone = Zone.objects.create(team=team, name=zone_name, ttl=ttl)
            Record.objects.create(zone=zone, type=Record.Type.SOA, name="@", data=nameservers[0] + ".", ttl=ttl)
            for ns in nameservers:
                Record.objects.create(zone=zone, type=Record.Type.NS, name="@", data=ns + ".", ttl=ttl)
            if ip_address not in (None, ""):
                Record.objects.create(zone=zone, type=Record.Type.A, name="@", data=str(address), ttl=ttl)
            notify.zone_changed_on_commit(zone_name)
    except IntegrityError:
        raise Invalid({"name": [NAME_TAKEN]}) from None
    return zone


def zone_delete(*, zone: Zone) -> None:
    with transaction.atomic():
        zone.delete()
        notify.zone_changed_on_commit(zone.name)


def _relative_name(zone: Zone, raw: Any) -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise Invalid({"name": ["is required (use @ for the zone apex)"]})
    raw = raw.strip()
    if raw == "@":
        return "@"
    absolute = raw.endswith(".")
    try:
        ascii_name = to_ascii(raw)
    except NameError_ as e:
        raise Invalid({"name": [str(e)]}) from None
    if absolute:
        if not is_within(ascii_name, zone.name):
            raise Invalid({"name": [f"must be inside the zone {zone.name}"]})
        relative = zone.relative(ascii_name)
    else:
        relative = ascii_name
        if len(zone.absolute(relative)) > 253:
            raise Invalid({"name": ["makes a name longer than 253 characters"]})
    if relative != "@":
        labels = relative.split(".")
        for index, label in enumerate(labels):
            if label == "*" and index == 0:
                continue
            if not all(c.isalnum() or c in "-_" for c in label):
                raise Invalid({"name": [f"label {label!r} may hold only letters, digits, - and _"]})
    return relative


def _hostname(zone: Zone, raw: Any, field: str = "data", allow_root: bool = False) -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise Invalid({field: ["must be a hostname"]})
    raw = raw.strip()
    if raw == "@":
        return zone.name + "."
    if raw == "." and allow_root:
        return "."
    try:
        ascii_name = to_ascii(raw)
    except NameError_ as e:
        raise Invalid({field: [str(e)]}) from None
    if not raw.endswith("."):
        ascii_name = zone.absolute(ascii_name)
    for label in ascii_name.split("."):
        if not all(c.isalnum() or c in "-_" for c in label):
            raise Invalid({field: [f"label {label!r} is not a valid hostname label"]})
    return ascii_name + "."


def _int(value: Any, field: str, low: int, high: int, required: bool) -> int | None:
    if value is None or value == "":
        if required:
            raise Invalid({field: [f"is required (an integer from {low} to {high})"]})
        return None
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise Invalid({field: [f"must be an integer from {low} to {high}"]})
    try:
        number = int(value)
    except ValueError:
        raise Invalid({field: [f"must be an integer from {low} to {high}"]}) from None
    if not low <= number <= high:
        raise Invalid({field: [f"must be an integer from {low} to {high}"]})
    return number


def clean_record(zone: Zone, data: dict[str, Any], instance: Record | None = None) -> dict[str, Any]:
    """Validate a record as given to the API or the panel; return the fields to store.

    With an instance, absent fields keep their stored values (PATCH); the type cannot change.
    """
    if instance is not None and instance.type == Record.Type.SOA:
        changed = [k for k, v in data.items() if k != "ttl" and v is not None and v != getattr(instance, k, None)]
        if changed:
            raise Invalid({changed[0]: ["only the ttl of an SOA record can change"]})
        return {"ttl": _int(data.get("ttl", instance.ttl), "ttl", MIN_TTL, MAX_TTL, True)}
    merged: dict[str, Any] = {}
    if instance is not None:
        merged = {
            f: getattr(instance, f)
            for f in ("type", "name", "data", "priority", "port", "ttl", "weight", "flags", "tag")
        }
        if "type" in data and str(data["type"]).upper() != instance.type:
            raise Invalid({"type": ["cannot be changed; delete the record and create a new one"]})
    merged.update({k: v for k, v in data.items() if k != "type" or instance is None})

    rtype = str(merged.get("type") or "").upper()
    if rtype not in TYPE_FIELDS:
        raise Invalid({"type": [f"must be one of {', '.join(CREATABLE_TYPES)}"]})

    out: dict[str, Any] = {"type": rtype, "name": _relative_name(zone, merged.get("name"))}
    ttl = merged.get("ttl")
    out["ttl"] = _int(ttl, "ttl", MIN_TTL, MAX_TTL, False) or settings.CERTHUB_DNS_DEFAULT_TTL
    for field in ("priority", "port", "weight", "flags", "tag"):
        if field not in TYPE_FIELDS[rtype] and merged.get(field) not in (None, "") and instance is None:
            raise Invalid({field: [f"is not used by {rtype} records"]})
        out[field] = None

    raw = merged.get("data")
    if rtype == Record.Type.A:
        try:
            out["data"] = str(ipaddress.IPv4Address(str(raw).strip()))
        except ValueError:
            raise Invalid({"data": ["must be an IPv4 address"]}) from None
    elif rtype == Record.Type.AAAA:
        try:
            address = ipaddress.IPv6Address(str(raw).strip())
        except ValueError:
            raise Invalid({"data": ["must be an IPv6 address"]}) from None
        if address.scope_id is not None:  # "fe80::1%eth0": a scope means nothing to a resolver
            raise Invalid({"data": ["must be an IPv6 address without a %scope"]})
        out["data"] = str(address)
    elif rtype in (Record.Type.CNAME, Record.Type.NS):
        out["data"] = _hostname(zone, raw)
    elif rtype == Record.Type.MX:
        out["data"] = _hostname(zone, raw, allow_root=True)
        out["priority"] = _int(merged.get("priority"), "priority", 0, 65535, True)
    elif rtype == Record.Type.SRV:
        out["data"] = _hostname(zone, raw, allow_root=True)
        out["priority"] = _int(merged.get("priority"), "priority", 0, 65535, True)
        out["weight"] = _int(merged.get("weight"), "weight", 0, 65535, True)
        out["port"] = _int(merged.get("port"), "port", 0, 65535, True)
        labels = out["name"].split(".")
        if len(labels) < 2 or not labels[0].startswith("_") or not labels[1].startswith("_"):
            raise Invalid({"name": ["SRV names start with _service._protocol (like _sip._tcp)"]})
    elif rtype == Record.Type.TXT:
        if not isinstance(raw, str) or raw == "":
            raise Invalid({"data": ["must be non-empty text"]})
        if len(raw.encode()) > MAX_TXT_BYTES:
            raise Invalid({"data": [f"must be at most {MAX_TXT_BYTES} bytes"]})
        out["data"] = raw
    elif rtype == Record.Type.CAA:
        out["flags"] = _int(merged.get("flags", 0) if merged.get("flags") is not None else 0, "flags", 0, 255, True)
        tag = merged.get("tag")
        if tag not in CAA_TAGS:
            raise Invalid({"tag": [f"must be one of {', '.join(CAA_TAGS)}"]})
        out["tag"] = tag
        if not isinstance(raw, str) or not raw.strip() or '"' in raw or len(raw) > 255:
            raise Invalid({"data": ["must be a CAA value without quotes, at most 255 characters"]})
        if tag == "iodef" and not raw.startswith(("mailto:", "http://", "https://")):
            raise Invalid({"data": ["an iodef value must be a mailto: or http(s): URL"]})
        out["data"] = raw.strip()

    _check_coexistence(zone, out, instance)
    return out


def _check_coexistence(zone: Zone, record: dict[str, Any], instance: Record | None) -> None:
    others = Record.objects.filter(zone=zone, name=record["name"])
    if instance is not None:
        others = others.exclude(pk=instance.pk)
    if record["type"] == Record.Type.CNAME:
        if record["name"] == "@":
            raise Invalid({"name": ["a CNAME cannot be at the zone apex"]})
        if others.exists():
            raise Invalid({"name": ["a CNAME must be the only record at its name"]})
    elif others.filter(type=Record.Type.CNAME).exists():
        raise Invalid({"name": ["the name already has a CNAME record, which must stay alone"]})
    if others.filter(type=record["type"], data=record["data"]).exists():
        raise Invalid({"data": ["an identical record already exists at this name"]})


@transaction.atomic
def record_create(*, zone: Zone, data: dict[str, Any]) -> Record:
    # Bumping first locks the zone row, so two writers cannot both pass the coexistence checks;
    # an invalid record rolls the bump back.
    zone.bump_serial()
    fields = clean_record(zone, data)
    return Record.objects.create(zone=zone, **fields)


@transaction.atomic
def record_update(*, record: Record, data: dict[str, Any]) -> Record:
    zone = Zone.objects.select_for_update().get(pk=record.zone_id)
    fields = clean_record(zone, data, instance=record)
    for key, value in fields.items():
        setattr(record, key, value)
    record.save()
    zone.bump_serial()
    return record


@transaction.atomic
def record_delete(*, record: Record) -> None:
    if record.type == Record.Type.SOA:
        raise Invalid({"type": ["the SOA record cannot be deleted"]})
    zone = Zone.objects.select_for_update().get(pk=record.zone_id)
    record.delete()
    zone.bump_serial()


def txt_present(*, zone: Zone, name: str, value: str, ttl: int = 60) -> None:
    """Add a TXT value at an absolute name unless it is there already (for ACME challenges)."""
    relative = zone.relative(name)
    with transaction.atomic():
        # Bumping first takes the zone's row lock, so a retried present cannot add a twin. On
        # hot paths (every ACME challenge) this is three statements in all.
        zone.bump_serial()
        records = Record.objects.filter(zone=zone, type=Record.Type.TXT, name=relative, data=value)
        if not records.exists():
            Record.objects.create(zone=zone, type=Record.Type.TXT, name=relative, data=value, ttl=ttl)


def txt_cleanup(*, zone: Zone, name: str, value: str) -> None:
    """Remove a TXT value at an absolute name; nothing to do if it is gone already."""
    relative = zone.relative(name)
    with transaction.atomic():
        zone.bump_serial()  # takes the zone's row lock; a no-op cleanup just costs a reload
        Record.objects.filter(zone=zone, type=Record.Type.TXT, name=relative, data=value).delete()


def zone_for_name(name: str, *, team: Team | None = None) -> Zone | None:
    """The hosted zone with the longest suffix of name, optionally only the team's."""
    zones = Zone.objects.filter(name__in=parents(name))
    if team is not None:
        zones = zones.filter(team=team)
    return max(zones, key=lambda z: len(z.name), default=None)
