from django.urls import path

from distribution import views

app_name = "distribution"
urlpatterns = [
    path("load-balancers/", views.load_balancer_list, name="load_balancer_list"),
    path("load-balancers/new", views.load_balancer_create, name="load_balancer_create"),
    path("load-balancers/<uuid:lb_id>/", views.load_balancer_detail, name="load_balancer_detail"),
    path("load-balancers/<uuid:lb_id>/edit", views.load_balancer_edit, name="load_balancer_edit"),
    path("load-balancers/<uuid:lb_id>/delete", views.load_balancer_delete, name="load_balancer_delete"),
    path("cdn/", views.cdn_endpoint_list, name="cdn_endpoint_list"),
    path("cdn/new", views.cdn_endpoint_create, name="cdn_endpoint_create"),
    path("cdn/<uuid:endpoint_id>/", views.cdn_endpoint_detail, name="cdn_endpoint_detail"),
    path("cdn/<uuid:endpoint_id>/edit", views.cdn_endpoint_edit, name="cdn_endpoint_edit"),
    path("cdn/<uuid:endpoint_id>/delete", views.cdn_endpoint_delete, name="cdn_endpoint_delete"),
    path("databases/", views.database_list, name="database_list"),
    path("databases/new", views.database_create, name="database_create"),
    path("databases/<uuid:cluster_id>/", views.database_detail, name="database_detail"),
    path("databases/<uuid:cluster_id>/delete", views.database_delete, name="database_delete"),
    path("webhooks/", views.webhook_list, name="webhook_list"),
    path("webhooks/<int:webhook_id>/", views.webhook_detail, name="webhook_detail"),
    path("webhooks/<int:webhook_id>/delete", views.webhook_delete, name="webhook_delete"),
]
