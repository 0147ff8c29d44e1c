"""The outbox handler of distribution: certificate events become deployments and webhook deliveries.

Called by certhub.outbox.dispatch inside the transaction that marks the event handled, so what
is planned here commits with that mark (and a redelivery plans nothing twice anyway).
"""

from certhub.models import OutboxEvent
from certificates import events as certificate_events
from distribution import delivery, webhooks


def handle(event: OutboxEvent) -> None:
    if event.stream != certificate_events.STREAM:
        return
    if event.kind == certificate_events.VERSION_CREATED and event.payload.get("version"):
        delivery.plan_version(version_id=event.payload["version"]["id"])
    webhooks.plan_deliveries(event)
