"""Print a new API token for a team, alone on stdout, for operators and scripts."""

from django.core.management.base import BaseCommand, CommandError

from certhub.models import ApiToken, Team


class Command(BaseCommand):
    help = "Create an API token for a team and print it (it is shown only once)."

    def add_arguments(self, parser):
        parser.add_argument("--team", required=True, help="team name")
        parser.add_argument("--create-team", action="store_true", help="create the team if missing")
        parser.add_argument("--scopes", default="read,write", help="comma-separated: read, write")
        parser.add_argument("--name", default="", help="a label to tell tokens apart")

    def handle(self, *args, team: str, create_team: bool, scopes: str, name: str, **options):
        wanted = [s.strip() for s in scopes.split(",") if s.strip()]
        unknown = sorted(set(wanted) - set(ApiToken.Scope.values))
        if unknown or not wanted:
            raise CommandError(f"--scopes: unknown scope(s) {', '.join(unknown) or '(none given)'}; use read, write")
        if create_team:
            team_obj, _ = Team.objects.get_or_create(name=team)
        else:
            team_obj = Team.objects.filter(name=team).first()
            if team_obj is None:
                raise CommandError(f"--team: no team named {team!r} (add --create-team to create it)")
        _, plaintext = ApiToken.issue(team=team_obj, scopes=wanted, name=name)
        self.stdout.write(plaintext)
