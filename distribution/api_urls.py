from django.urls import path

from distribution.api import cdn, load_balancers

urlpatterns = [
    path("cdn/endpoints", cdn.CdnEndpointListView.as_view()),
    path("cdn/endpoints/<uuid:cdn_id>", cdn.CdnEndpointDetailView.as_view()),
    path("cdn/endpoints/<uuid:cdn_id>/cache", cdn.CdnCacheView.as_view()),
    path("load_balancers", load_balancers.LoadBalancerListView.as_view()),
    path("load_balancers/<uuid:lb_id>", load_balancers.LoadBalancerDetailView.as_view()),
    path("load_balancers/<uuid:lb_id>/forwarding_rules", load_balancers.ForwardingRulesView.as_view()),
]
