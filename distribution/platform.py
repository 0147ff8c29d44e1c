"""The platform's own team and zones in CertHub's DNS: CDN endpoint names and database host names."""

from django.conf import settings
from django.db import transaction

from certhub.models import Team
from dns_zones import services as zone_services
from dns_zones.models import Record, Zone


def platform_team() -> Team:
    team, _ = Team.objects.get_or_create(name=settings.CERTHUB_PLATFORM_TEAM)
    return team


def platform_zone(name: str) -> Zone:
    """The platform's zone `name`, created on first use."""
    zone = Zone.objects.filter(name=name).first()
    if zone is not None:
        if zone.team.name != settings.CERTHUB_PLATFORM_TEAM:
            raise RuntimeError(f"zone {name} belongs to team {zone.team.name}, not the platform")
        return zone
    return zone_services.zone_create(team=platform_team(), name=name)


@transaction.atomic
def publish_address(*, zone: Zone, name: str, address: str, ttl: int = 60) -> None:
    """Make the absolute `name` answer exactly `address` (A record) in the platform zone."""
    relative = zone.relative(name)
    zone.bump_serial()
    Record.objects.filter(zone=zone, name=relative, type__in=[Record.Type.A, Record.Type.AAAA]).delete()
    record_type = Record.Type.AAAA if ":" in address else Record.Type.A
    Record.objects.create(zone=zone, name=relative, type=record_type, data=address, ttl=ttl)


@transaction.atomic
def withdraw_address(*, zone: Zone, name: str) -> None:
    relative = zone.relative(name)
    zone.bump_serial()
    Record.objects.filter(zone=zone, name=relative, type__in=[Record.Type.A, Record.Type.AAAA]).delete()
