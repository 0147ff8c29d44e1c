"""Mark many certificates for a new key type; each changes at its next renewal."""

from django.core.management.base import BaseCommand, CommandError

from certhub.models import Team
from certificates.models import Certificate, KeyType


class Command(BaseCommand):
    help = "Change the key type of many Let's Encrypt certificates at their next renewal."

    def add_arguments(self, parser):
        parser.add_argument("--from", dest="source", required=True, help="rsa, ecdsa, or an exact key type")
        parser.add_argument("--to", dest="target", required=True, choices=KeyType.values)
        parser.add_argument("--team", help="only this team's certificates")

    def handle(self, *args, source: str, target: str, team: str | None, **options):
        families = {"rsa": [k for k in KeyType.values if k.startswith("rsa-")],
                    "ecdsa": [k for k in KeyType.values if k.startswith("ecdsa-")]}  # fmt: skip
        sources = families.get(source) or ([source] if source in KeyType.values else None)
        if sources is None:
            raise CommandError(f"--from: {source!r} is not rsa, ecdsa or one of {', '.join(KeyType.values)}")
        certificates = Certificate.objects.filter(type=Certificate.Type.LETS_ENCRYPT, key_type__in=sources)
        if team:
            team_obj = Team.objects.filter(name=team).first()
            if team_obj is None:
                raise CommandError(f"--team: no team named {team!r}")
            certificates = certificates.filter(team=team_obj)
        changed = certificates.exclude(key_type=target).update(key_type=target)
        self.stdout.write(f"{changed} certificate(s) will get {target} keys at their next renewal")
