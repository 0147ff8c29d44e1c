from django.urls import path

from certificates import views

app_name = "certificates"
urlpatterns = [
    path("", views.certificate_list, name="certificate_list"),
    path("<uuid:certificate_id>/", views.certificate_detail, name="certificate_detail"),
    path("<uuid:certificate_id>/delete", views.certificate_delete, name="certificate_delete"),
]
