"""Pages for the team's API tokens."""

from django import forms
from django.contrib import messages
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from certhub.models import ApiToken
from certhub.tenancy import team_required


class TokenForm(forms.Form):
    name = forms.CharField(max_length=100, required=False)
    scopes = forms.MultipleChoiceField(
        choices=ApiToken.Scope.choices, initial=["read"], widget=forms.CheckboxSelectMultiple
    )


@team_required
def token_list(request):
    form = TokenForm(request.POST or None)
    plaintext = None
    if request.method == "POST" and form.is_valid():
        _, plaintext = ApiToken.issue(
            team=request.team, scopes=form.cleaned_data["scopes"], name=form.cleaned_data["name"]
        )
        form = TokenForm()
    tokens = ApiToken.objects.filter(team=request.team).order_by("-created_at")
    response = render(request, "certhub/token_list.html", {"tokens": tokens, "form": form, "plaintext": plaintext})
    response["Cache-Control"] = "no-store"
    return response


@require_POST
@team_required
def token_revoke(request, token_id: int):
    token = get_object_or_404(ApiToken, team=request.team, pk=token_id, revoked_at__isnull=True)
    token.revoke()
    messages.success(request, f"Token {token.prefix}… revoked.")
    return redirect("token_list")
