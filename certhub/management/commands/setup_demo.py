"""Create the demo team and user of the embedded default, and say how to sign in."""

import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from certhub.models import Membership, Team

DEMO_USER = "demo"
DEMO_TEAM = "demo"


class Command(BaseCommand):
    help = "Create a demo team and user (idempotent) and print how to sign in."

    def handle(self, *args, **options):
        team, _ = Team.objects.get_or_create(name=DEMO_TEAM)
        User = get_user_model()
        user = User.objects.filter(username=DEMO_USER).first()
        password = secrets.token_urlsafe(9)
        if user is None:
            user = User.objects.create_superuser(DEMO_USER, "demo@localhost", password)
        else:
            user.set_password(password)
            user.save(update_fields=["password"])
        Membership.objects.get_or_create(team=team, user=user)
        self.stdout.write(
            self.style.SUCCESS(
                f"Sign in at http://127.0.0.1:8000/ as {DEMO_USER} with password {password} "
                "(a new password each start)."
            )
        )
