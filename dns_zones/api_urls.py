from django.urls import path

from dns_zones import api

urlpatterns = [
    path("domains", api.DomainListView.as_view()),
    path("domains/<str:domain_name>", api.DomainDetailView.as_view()),
    path("domains/<str:domain_name>/records", api.RecordListView.as_view()),
    path("domains/<str:domain_name>/records/<int:record_id>", api.RecordDetailView.as_view()),
]
