from django.urls import path

from certificates import views

app_name = "certificates"
urlpatterns = [
    path("", views.certificate_list, name="certificate_list"),
    path("upload", views.certificate_upload, name="certificate_upload"),
    path("<uuid:certificate_id>/upload", views.certificate_replace, name="certificate_replace"),
    path("<uuid:certificate_id>/", views.certificate_detail, name="certificate_detail"),
    path("<uuid:certificate_id>/delete", views.certificate_delete, name="certificate_delete"),
    path("<uuid:certificate_id>/key-type", views.certificate_key_type, name="certificate_key_type"),
    path("<uuid:certificate_id>/renew", views.certificate_renew, name="certificate_renew"),
]
