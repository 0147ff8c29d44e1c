"""`/v2/cdn/endpoints`, as in DigitalOcean's API v2; origins may also be `http://host[:port]`."""

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from certhub.api_common import (
    PageNumberLinksPagination,
    error_body,
    json_object,
    request_team,
    timestamp,
)
from distribution import cdn as services
from distribution.adapters import AdapterError
from distribution.models import CdnEndpoint


def endpoint_dict(endpoint: CdnEndpoint) -> dict:
    return {
        "id": str(endpoint.pk),
        "origin": endpoint.origin,
        "endpoint": endpoint.endpoint,
        "created_at": timestamp(endpoint.created_at),
        "ttl": endpoint.ttl,
        "certificate_id": str(endpoint.certificate_id) if endpoint.certificate_id else "",
        "custom_domain": endpoint.custom_domain,
    }


ENDPOINT_SCHEMA = inline_serializer(
    "CdnEndpointEnvelope", {"endpoint": serializers.DictField(help_text="DigitalOcean's CDN endpoint object")}
)
PURGE_SCHEMA = inline_serializer("CdnPurgeBody", {"files": serializers.ListField(child=serializers.CharField())})


def _team_endpoints(request):
    return CdnEndpoint.objects.filter(team=request_team(request))


class CdnEndpointListView(APIView):
    @extend_schema(
        operation_id="cdn_list_endpoints",
        responses=inline_serializer("CdnEndpointList", {"endpoints": serializers.ListField()}),
    )
    def get(self, request):
        paginator = PageNumberLinksPagination()
        page = paginator.paginate_queryset(_team_endpoints(request), request, view=self)
        return paginator.get_paginated_response([endpoint_dict(ep) for ep in page], key="endpoints")

    @extend_schema(request=ENDPOINT_SCHEMA, responses={201: ENDPOINT_SCHEMA})
    def post(self, request):
        endpoint = services.cdn_endpoint_create(team=request_team(request), data=json_object(request))
        return Response({"endpoint": endpoint_dict(endpoint)}, status=status.HTTP_201_CREATED)


class CdnEndpointDetailView(APIView):
    @extend_schema(responses=ENDPOINT_SCHEMA)
    def get(self, request, cdn_id):
        return Response({"endpoint": endpoint_dict(get_object_or_404(_team_endpoints(request), pk=cdn_id))})

    @extend_schema(request=ENDPOINT_SCHEMA, responses=ENDPOINT_SCHEMA)
    def put(self, request, cdn_id):
        endpoint = get_object_or_404(_team_endpoints(request).select_related("team", "certificate"), pk=cdn_id)
        services.cdn_endpoint_update(endpoint=endpoint, data=json_object(request))
        return Response({"endpoint": endpoint_dict(endpoint)})

    @extend_schema(responses={204: None})
    def delete(self, request, cdn_id):
        services.cdn_endpoint_delete(endpoint=get_object_or_404(_team_endpoints(request), pk=cdn_id))
        return Response(status=status.HTTP_204_NO_CONTENT)


class CdnCacheView(APIView):
    @extend_schema(request=PURGE_SCHEMA, responses={204: None})
    def delete(self, request, cdn_id):
        endpoint = get_object_or_404(_team_endpoints(request), pk=cdn_id)
        try:
            services.cdn_cache_purge(endpoint=endpoint, data=json_object(request))
        except AdapterError as e:
            body = error_body(503, f"The CDN edge could not purge now; try again. ({e})")
            return Response(body, status=status.HTTP_503_SERVICE_UNAVAILABLE)
        return Response(status=status.HTTP_204_NO_CONTENT)
