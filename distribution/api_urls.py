from django.urls import path

from distribution.api import cdn, databases, load_balancers, webhooks

urlpatterns = [
    path("cdn/endpoints", cdn.CdnEndpointListView.as_view()),
    path("cdn/endpoints/<uuid:cdn_id>", cdn.CdnEndpointDetailView.as_view()),
    path("cdn/endpoints/<uuid:cdn_id>/cache", cdn.CdnCacheView.as_view()),
    path("databases", databases.DatabaseListView.as_view()),
    path("databases/<uuid:cluster_id>", databases.DatabaseDetailView.as_view()),
    path("load_balancers", load_balancers.LoadBalancerListView.as_view()),
    path("load_balancers/<uuid:lb_id>", load_balancers.LoadBalancerDetailView.as_view()),
    path("load_balancers/<uuid:lb_id>/forwarding_rules", load_balancers.ForwardingRulesView.as_view()),
    path("load_balancers/<uuid:lb_id>/droplets", load_balancers.DropletsView.as_view()),
    path("load_balancers/<uuid:lb_id>/cache", load_balancers.CacheView.as_view()),
    path("webhooks", webhooks.WebhookListView.as_view()),
    path("webhooks/<int:webhook_id>", webhooks.WebhookDetailView.as_view()),
    path("webhooks/<int:webhook_id>/deliveries", webhooks.WebhookDeliveryListView.as_view()),
]
