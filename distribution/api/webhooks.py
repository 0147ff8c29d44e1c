"""`/v2/webhooks` (an addition to DigitalOcean's API): a team's endpoints told of every certificate event."""

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from certhub.api_common import PageNumberLinksPagination, json_object, request_team, timestamp
from distribution import webhooks as services
from distribution.models import Webhook, WebhookDelivery

WEBHOOK_SCHEMA = inline_serializer(
    "WebhookEnvelope",
    {"webhook": inline_serializer("Webhook", {"id": serializers.IntegerField(), "url": serializers.URLField()})},
)


def webhook_dict(webhook: Webhook) -> dict:
    return {"id": webhook.pk, "url": webhook.url, "active": webhook.active, "created_at": timestamp(webhook.created_at)}


def delivery_dict(delivery: WebhookDelivery) -> dict:
    return {
        "id": delivery.pk, "event_id": str(delivery.event_id), "type": delivery.kind, "status": delivery.status,
        "attempts": delivery.attempts, "response_status": delivery.response_status,
        "response_body": delivery.response_body, "last_error": delivery.last_error,
        "duration_ms": delivery.duration_ms, "created_at": timestamp(delivery.created_at),
        "delivered_at": timestamp(delivery.delivered_at),
        "next_attempt_at": timestamp(delivery.next_attempt_at) if delivery.status == "pending" else None,
    }  # fmt: skip


class WebhookListView(APIView):
    @extend_schema(
        operation_id="webhooks_list", responses=inline_serializer("WebhookList", {"webhooks": serializers.ListField()})
    )
    def get(self, request):
        paginator = PageNumberLinksPagination()
        page = paginator.paginate_queryset(Webhook.objects.filter(team=request_team(request)), request, view=self)
        return paginator.get_paginated_response([webhook_dict(w) for w in page], key="webhooks")

    @extend_schema(request=WEBHOOK_SCHEMA, responses={201: WEBHOOK_SCHEMA})
    def post(self, request):
        webhook, secret = services.webhook_create(team=request_team(request), url=json_object(request).get("url"))
        # The signing secret is shown once, now; it is stored encrypted and never returned again.
        response = Response({"webhook": {**webhook_dict(webhook), "secret": secret}}, status=status.HTTP_201_CREATED)
        response["Cache-Control"] = "no-store"
        return response


class WebhookDetailView(APIView):
    @extend_schema(responses=WEBHOOK_SCHEMA)
    def get(self, request, webhook_id):
        return Response(
            {"webhook": webhook_dict(get_object_or_404(Webhook, team=request_team(request), pk=webhook_id))}
        )

    @extend_schema(responses={204: None})
    def delete(self, request, webhook_id):
        get_object_or_404(Webhook, team=request_team(request), pk=webhook_id).delete()
        return Response(status=status.HTTP_204_NO_CONTENT)


class WebhookDeliveryListView(APIView):
    @extend_schema(responses=inline_serializer("WebhookDeliveryList", {"deliveries": serializers.ListField()}))
    def get(self, request, webhook_id):
        webhook = get_object_or_404(Webhook, team=request_team(request), pk=webhook_id)
        paginator = PageNumberLinksPagination()
        page = paginator.paginate_queryset(webhook.deliveries.all(), request, view=self)
        return paginator.get_paginated_response([delivery_dict(d) for d in page], key="deliveries")
