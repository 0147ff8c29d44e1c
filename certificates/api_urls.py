from django.urls import path

from certificates import api

urlpatterns = [
    path("certificates", api.CertificateListView.as_view()),
    path("certificates/<uuid:certificate_id>", api.CertificateDetailView.as_view()),
    path("certificates/<uuid:certificate_id>/actions", api.CertificateActionView.as_view()),
]
