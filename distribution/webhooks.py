"""Customers' webhooks: every certificate event, signed per Standard Webhooks, retried, recorded.

The body is `{"type", "timestamp", "data"}`; `data` is the event's public payload plus where to
fetch the certificate's public chain. Never a private key: the payload is built from named
public fields by certificates.events. Each delivery is signed with the team's secret
(`webhook-id` is the event id, so a receiver can drop duplicates).
"""

import base64
import json
import logging
import secrets
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from standardwebhooks.webhooks import Webhook as Signer

from certhub.errors import Invalid
from certhub.models import OutboxEvent, Team
from distribution.addresses import refusal
from distribution.delivery import retry_delay
from distribution.models import Webhook, WebhookDelivery
from distribution.tasks import deliver_webhook

log = logging.getLogger(__name__)
Status = WebhookDelivery.Status
CLAIM_SECONDS = 60
RESPONSE_KEPT = 500


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def clean_url(raw) -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise Invalid({"url": ["is required"]})
    url = raw.strip()
    try:
        parsed = urllib.parse.urlsplit(url)
        parsed.port  # noqa: B018 (raises ValueError for a port that is not a number up to 65535)
        if parsed.hostname:
            parsed.hostname.encode("idna")
    except (ValueError, UnicodeError):
        raise Invalid({"url": ["must be an http:// or https:// URL with a valid host name and port"]}) from None
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise Invalid({"url": ["must be an http:// or https:// URL with a host name"]})
    if len(url) > 500:
        raise Invalid({"url": ["must be at most 500 characters"]})
    if parsed.username or parsed.password:
        raise Invalid({"url": ["must not carry a user name or password; verify the signature instead"]})
    return url


def webhook_create(*, team: Team, url) -> tuple[Webhook, str]:
    """Register a webhook; return it with its secret, which is shown only now."""
    secret = new_secret()
    webhook = Webhook.objects.create(team=team, url=clean_url(url), secret=secret)
    return webhook, secret


def plan_deliveries(events: list[OutboxEvent]) -> None:
    """One delivery per active webhook of each event's team (idempotent by event id); one query when none."""
    hooks: dict[int, list[Webhook]] = {}
    for webhook in Webhook.objects.filter(team_id__in={event.team_id for event in events}, active=True):
        hooks.setdefault(webhook.team_id, []).append(webhook)
    for event in events:
        for webhook in hooks.get(event.team_id, []):
            delivery, created = WebhookDelivery.objects.get_or_create(
                webhook=webhook, event_id=event.event_id, defaults={"kind": event.kind, "payload": body(event)}
            )
            if created:
                transaction.on_commit(lambda pk=delivery.pk: _enqueue(pk), robust=True)


def body(event: OutboxEvent) -> dict:
    data = dict(event.payload)
    certificate_id = data.get("certificate_id")
    if certificate_id:
        data["certificate_url"] = f"{settings.CERTHUB_PUBLIC_URL}/v2/certificates/{certificate_id}"
    return {"type": event.kind, "timestamp": event.created_at.isoformat().replace("+00:00", "Z"), "data": data}


def _enqueue(delivery_id: int) -> None:
    deliver_webhook.delay(delivery_id)


def due_deliveries() -> list[int]:
    now = timezone.now()
    return list(
        WebhookDelivery.objects.filter(status=Status.PENDING, next_attempt_at__lte=now).values_list("pk", flat=True)[
            :1000
        ]
    )


def deliver(delivery_id: int, *, now: datetime | None = None) -> float | None:
    """Send one delivery if it is due and unclaimed; return seconds until its retry, if any."""
    now = now or timezone.now()
    claimed = WebhookDelivery.objects.filter(
        Q(pk=delivery_id), Q(status=Status.PENDING), Q(next_attempt_at__lte=now)
    ).update(next_attempt_at=now + timedelta(seconds=CLAIM_SECONDS))
    if claimed != 1:
        return None
    delivery = WebhookDelivery.objects.select_related("webhook").get(pk=delivery_id)
    started = time.monotonic()
    status, response, error = _post(delivery)
    duration_ms = round((time.monotonic() - started) * 1000)
    attempts = delivery.attempts + 1
    fields = {
        "attempts": attempts, "response_status": status, "response_body": response[:RESPONSE_KEPT],
        "last_error": error, "duration_ms": duration_ms,
    }  # fmt: skip
    if status is not None and 200 <= status < 300:
        WebhookDelivery.objects.filter(pk=delivery_id).update(
            status=Status.DELIVERED, delivered_at=timezone.now(), **fields
        )
        return None
    delay = retry_delay(attempts)
    expired = timezone.now() + timedelta(seconds=delay) > delivery.created_at + timedelta(
        seconds=settings.CERTHUB_DELIVERY_RETRY_BUDGET_SECONDS
    )
    WebhookDelivery.objects.filter(pk=delivery_id).update(
        status=Status.FAILED if expired else Status.PENDING,
        next_attempt_at=timezone.now() + timedelta(seconds=delay),
        **fields,
    )
    return None if expired else delay


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect is an answer, not a hop: following it would reach a URL no check has seen."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


_OPENER = urllib.request.build_opener(_NoRedirects)


def _post(delivery: WebhookDelivery) -> tuple[int | None, str, str]:
    """POST the signed body; return (status, response text, error) and never raise."""
    url = delivery.webhook.url
    refused = refusal(urllib.parse.urlsplit(url).hostname or "")
    if refused:
        return None, "", refused
    payload = json.dumps(delivery.payload, separators=(",", ":"))
    sent_at = datetime.now(UTC)
    msg_id = f"msg_{delivery.event_id}"
    signature = Signer(delivery.webhook.secret).sign(msg_id, sent_at, payload)
    request = urllib.request.Request(  # noqa: S310 (clean_url admits only http and https)
        url,
        data=payload.encode(),
        method="POST",
        headers={
            "Content-Type": "application/json",
            "User-Agent": "CertHub-Webhooks/1",
            "webhook-id": msg_id,
            "webhook-timestamp": str(int(sent_at.timestamp())),
            "webhook-signature": signature,
        },
    )
    try:
        with _OPENER.open(request, timeout=settings.CERTHUB_WEBHOOK_TIMEOUT) as response:
            return response.status, response.read(RESPONSE_KEPT).decode(errors="replace"), ""
    except urllib.error.HTTPError as e:
        return e.code, e.read(RESPONSE_KEPT).decode(errors="replace"), f"answered HTTP {e.code}"
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        return None, "", f"could not connect: {reason}"
    except Exception as e:  # a URL the HTTP client cannot use must fail this attempt, not the task
        return None, "", f"could not send: {type(e).__name__}"
