"""`/v2/load_balancers`, as in DigitalOcean's API v2, with `target_addresses` added.

Responses carry exactly DigitalOcean's keys for forwarding rules and health checks, which
python-digitalocean turns into objects that accept no other key.
"""

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from certhub.api_common import PageNumberLinksPagination, Unprocessable, json_object, request_team, timestamp
from distribution import load_balancers as services
from distribution.models import LoadBalancer

DROPLETS_MEANINGLESS = "there are no droplets here; set target_addresses with PUT /v2/load_balancers/{id}"


def region_object(slug: str) -> dict:
    return {"name": slug, "slug": slug, "features": ["load_balancers"], "available": True, "sizes": ["lb-small"]}


def rule_dict(rule) -> dict:
    return {
        "entry_protocol": rule.entry_protocol, "entry_port": rule.entry_port,
        "target_protocol": rule.target_protocol, "target_port": rule.target_port,
        "certificate_id": str(rule.certificate_id) if rule.certificate_id else "",
        "tls_passthrough": rule.tls_passthrough,
    }  # fmt: skip


def lb_dict(lb: LoadBalancer) -> dict:
    return {
        "id": str(lb.pk),
        "name": lb.name,
        "ip": lb.ip,
        "ipv6": "",
        "size_unit": lb.size_unit,
        "size": lb.size,
        "algorithm": lb.algorithm,
        "status": lb.status,
        "created_at": timestamp(lb.created_at),
        "forwarding_rules": [rule_dict(rule) for rule in lb.forwarding_rules.all()],
        "health_check": lb.health_check,
        "sticky_sessions": lb.sticky_sessions,
        "region": region_object(lb.region),
        "tag": "",
        "droplet_ids": [],
        "redirect_http_to_https": lb.redirect_http_to_https,
        "enable_proxy_protocol": False,
        "enable_backend_keepalive": False,
        "http_idle_timeout_seconds": lb.http_idle_timeout_seconds,
        "vpc_uuid": "",
        "project_id": "",
        "disable_lets_encrypt_dns_records": False,
        "firewall": {"deny": [], "allow": []},
        "network": "EXTERNAL",
        "network_stack": "IPV4",
        "type": "REGIONAL",
        "tls_cipher_policy": "DEFAULT",
        # Additions: where it forwards to, and why it is errored.
        "target_addresses": lb.target_addresses,
        "last_error": lb.last_error,
    }


LB_SCHEMA = inline_serializer(
    "LoadBalancerEnvelope", {"load_balancer": serializers.DictField(help_text="DigitalOcean's load balancer object")}
)
RULES_SCHEMA = inline_serializer(
    "ForwardingRulesBody", {"forwarding_rules": serializers.ListField(child=serializers.DictField())}
)


def _team_lbs(request):
    return LoadBalancer.objects.filter(team=request_team(request)).prefetch_related("forwarding_rules")


class LoadBalancerListView(APIView):
    @extend_schema(
        operation_id="load_balancers_list",
        responses=inline_serializer("LoadBalancerList", {"load_balancers": serializers.ListField()}),
    )
    def get(self, request):
        paginator = PageNumberLinksPagination()
        page = paginator.paginate_queryset(_team_lbs(request), request, view=self)
        return paginator.get_paginated_response([lb_dict(lb) for lb in page], key="load_balancers")

    @extend_schema(request=LB_SCHEMA, responses={202: LB_SCHEMA})
    def post(self, request):
        lb = services.load_balancer_create(team=request_team(request), data=json_object(request))
        return Response({"load_balancer": lb_dict(_team_lbs(request).get(pk=lb.pk))}, status=status.HTTP_202_ACCEPTED)


class LoadBalancerDetailView(APIView):
    @extend_schema(responses=LB_SCHEMA)
    def get(self, request, lb_id):
        return Response({"load_balancer": lb_dict(get_object_or_404(_team_lbs(request), pk=lb_id))})

    @extend_schema(request=LB_SCHEMA, responses=LB_SCHEMA)
    def put(self, request, lb_id):
        lb = get_object_or_404(_team_lbs(request), pk=lb_id)
        services.load_balancer_update(lb=lb, data=json_object(request))
        return Response({"load_balancer": lb_dict(_team_lbs(request).get(pk=lb.pk))})

    @extend_schema(responses={204: None})
    def delete(self, request, lb_id):
        services.load_balancer_delete(lb=get_object_or_404(_team_lbs(request), pk=lb_id))
        return Response(status=status.HTTP_204_NO_CONTENT)


class ForwardingRulesView(APIView):
    @extend_schema(request=RULES_SCHEMA, responses={204: None})
    def post(self, request, lb_id):
        lb = get_object_or_404(_team_lbs(request), pk=lb_id)
        services.rules_add(lb=lb, data=json_object(request))
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=RULES_SCHEMA, responses={204: None})
    def delete(self, request, lb_id):
        lb = get_object_or_404(_team_lbs(request), pk=lb_id)
        services.rules_remove(lb=lb, data=json_object(request))
        return Response(status=status.HTTP_204_NO_CONTENT)


DROPLETS_SCHEMA = inline_serializer(
    "DropletIds", {"droplet_ids": serializers.ListField(child=serializers.IntegerField())}
)


class DropletsView(APIView):
    """DigitalOcean's droplet membership: droplets mean nothing here, so say what to use instead."""

    @extend_schema(operation_id="load_balancers_add_droplets", request=DROPLETS_SCHEMA, responses={422: None})
    def post(self, request, lb_id):
        get_object_or_404(_team_lbs(request), pk=lb_id)
        raise Unprocessable({"droplet_ids": [DROPLETS_MEANINGLESS]})

    @extend_schema(operation_id="load_balancers_remove_droplets", request=DROPLETS_SCHEMA, responses={422: None})
    def delete(self, request, lb_id):
        get_object_or_404(_team_lbs(request), pk=lb_id)
        raise Unprocessable({"droplet_ids": [DROPLETS_MEANINGLESS]})


class CacheView(APIView):
    """DigitalOcean's `DELETE /v2/load_balancers/{id}/cache`: CertHub's load balancers keep no cache."""

    @extend_schema(operation_id="load_balancers_delete_cache", responses={204: None})
    def delete(self, request, lb_id):
        get_object_or_404(_team_lbs(request), pk=lb_id)
        return Response(status=status.HTTP_204_NO_CONTENT)
