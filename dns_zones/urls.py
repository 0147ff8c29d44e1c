from django.urls import path

from dns_zones import views

app_name = "dns_zones"
urlpatterns = [
    path("", views.zone_list, name="zone_list"),
    path("<str:name>/", views.zone_detail, name="zone_detail"),
    path("<str:name>/delete", views.zone_delete, name="zone_delete"),
    path("<str:name>/records/<int:record_id>/", views.record_edit, name="record_edit"),
    path("<str:name>/records/<int:record_id>/delete", views.record_delete, name="record_delete"),
]
