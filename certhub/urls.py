from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.http import HttpResponse
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularJSONAPIView

from certhub import metrics, views

handler404 = "certhub.api_common.json_not_found"
handler500 = "certhub.api_common.json_server_error"

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="dns_zones:zone_list", permanent=False)),
    path("healthz", lambda request: HttpResponse("ok", content_type="text/plain")),
    path("metrics", metrics.metrics_view, name="metrics"),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("v2/openapi.json", SpectacularJSONAPIView.as_view(), name="openapi"),
    path("v2/", include("dns_zones.api_urls")),
    path("v2/", include("certificates.api_urls")),
    path("v2/", include("distribution.api_urls")),
    path("zones/", include("dns_zones.urls")),
    path("certificates/", include("certificates.urls")),
    path("products/", include("distribution.urls")),
    path("tokens/", views.token_list, name="token_list"),
    path("tokens/<int:token_id>/revoke", views.token_revoke, name="token_revoke"),
]
