"""DRF authentication by `Authorization: Bearer <token>` and permission by token scope."""

from django.utils.translation import gettext_lazy as _
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions, permissions

from certhub.models import ApiToken


class BearerTokenAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).split()
        if not header or header[0].lower() != self.keyword.lower().encode():
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed(_("Unable to authenticate you."))
        try:
            plaintext = header[1].decode()
        except UnicodeError:
            raise exceptions.AuthenticationFailed(_("Unable to authenticate you.")) from None
        token = (
            ApiToken.objects.select_related("team")
            .filter(token_hash=ApiToken.hash(plaintext), revoked_at__isnull=True)
            .first()
        )
        if token is None:
            raise exceptions.AuthenticationFailed(_("Unable to authenticate you."))
        token.touch()
        return (None, token)

    def authenticate_header(self, request) -> str:
        return f'{self.keyword} realm="api"'


class HasTokenScope(permissions.BasePermission):
    """Safe methods need the `read` scope, everything else `write`."""

    message = "You do not have access for the attempted action."

    def has_permission(self, request, view) -> bool:
        token = request.auth
        if not isinstance(token, ApiToken):
            return False
        needed = ApiToken.Scope.READ if request.method in permissions.SAFE_METHODS else ApiToken.Scope.WRITE
        return needed in token.scopes


class BearerTokenScheme(OpenApiAuthenticationExtension):
    """Describe Bearer tokens in the OpenAPI schema."""

    target_class = "certhub.authentication.BearerTokenAuthentication"
    name = "bearerAuth"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer"}
