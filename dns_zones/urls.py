from django.urls import path

app_name = "dns_zones"
urlpatterns: list = []
