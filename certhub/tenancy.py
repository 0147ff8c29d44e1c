"""The team a page request acts for, and the context every page gets."""

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest

from certhub.models import Team

SESSION_KEY = "certhub_team_id"


def current_team(request: HttpRequest) -> Team | None:
    """The team chosen in this session, else the user's first team."""
    user = request.user
    if not user.is_authenticated:
        return None
    teams = Team.objects.filter(membership__user=user).order_by("name")
    chosen = request.session.get(SESSION_KEY)
    team = teams.filter(pk=chosen).first() if chosen else None
    return team or teams.first()


def team_required(view):
    """Page decorator: signed in, member of a team; sets request.team."""

    @login_required
    def wrapper(request, *args, **kwargs):
        team = current_team(request)
        if team is None:
            raise PermissionDenied("You are not a member of any team.")
        request.team = team
        return view(request, *args, **kwargs)

    wrapper.__name__ = view.__name__
    wrapper.__doc__ = view.__doc__
    return wrapper


def team_context(request: HttpRequest) -> dict:
    return {"team": getattr(request, "team", None)}
