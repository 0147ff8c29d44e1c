"""Hosted DNS zones and their records (DigitalOcean's "Domains")."""

import time

from django.db import models
from django.db.models import F
from django.db.models.functions import Greatest
from django.utils import timezone

from certhub.models import Team
from dns_zones import notify


def next_serial(current: int = 0) -> int:
    """A serial that always grows: the Unix time, or one more than the last when changes are faster."""
    return max(current + 1, int(time.time()))


class Zone(models.Model):
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="zones")
    # Lowercase A-label form without the trailing dot; unique across all teams.
    name = models.CharField(max_length=253, unique=True)
    serial = models.PositiveBigIntegerField(default=next_serial)
    ttl = models.PositiveIntegerField(default=1800)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def bump_serial(self) -> None:
        """Mark the zone changed, so the DNS server reloads it and secondaries see a new SOA.

        One UPDATE, which also locks the zone row until the caller's transaction ends; the new
        serial is not read back (refresh_from_db when it is needed).
        """
        now = int(time.time())
        Zone.objects.filter(pk=self.pk).update(serial=Greatest(F("serial") + 1, now), updated_at=timezone.now())
        # Once committed (with the records changed in the same transaction), tell run_dns.
        notify.zone_changed_on_commit(self.name)

    def absolute(self, relative: str) -> str:
        """The fully qualified name (no trailing dot) of a record name relative to this zone."""
        return self.name if relative == "@" else f"{relative}.{self.name}"

    def relative(self, absolute: str) -> str:
        """A name inside this zone (no trailing dot) relative to it: "@" for the apex."""
        return absolute[: -len(self.name)].rstrip(".") or "@"


class Record(models.Model):
    class Type(models.TextChoices):
        A = "A"
        AAAA = "AAAA"
        CNAME = "CNAME"
        TXT = "TXT"
        MX = "MX"
        NS = "NS"
        CAA = "CAA"
        SRV = "SRV"
        SOA = "SOA"

    zone = models.ForeignKey(Zone, on_delete=models.CASCADE, related_name="records")
    type = models.CharField(max_length=5, choices=Type.choices)
    # Relative to the zone, lowercase, "@" for the apex.
    name = models.CharField(max_length=253)
    data = models.TextField()
    priority = models.PositiveIntegerField(null=True, blank=True)
    port = models.PositiveIntegerField(null=True, blank=True)
    ttl = models.PositiveIntegerField(default=1800)
    weight = models.PositiveIntegerField(null=True, blank=True)
    flags = models.PositiveSmallIntegerField(null=True, blank=True)
    tag = models.CharField(max_length=15, null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["zone", "name", "type"])]

    def __str__(self) -> str:
        return f"{self.name} {self.type} {self.data}"

    @property
    def fqdn(self) -> str:
        return self.zone.absolute(self.name)
