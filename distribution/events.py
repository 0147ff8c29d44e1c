"""The outbox handler of distribution: certificate events become deployments and webhook deliveries.

Called by certhub.outbox.dispatch with each batch, inside the transaction that marks it handled, so what
is planned here commits with that mark (and a redelivery plans nothing twice anyway).
"""

from certhub.models import OutboxEvent
from certificates import events as certificate_events
from distribution import delivery, webhooks


def handle(events: list[OutboxEvent]) -> None:
    """Plan deployments for the batch's new versions (a few queries for the whole batch) and webhooks for all."""
    ours = [event for event in events if event.stream == certificate_events.STREAM]
    version_ids = [
        event.payload["version"]["id"]
        for event in ours
        if event.kind == certificate_events.VERSION_CREATED and event.payload.get("version")
    ]
    if version_ids:
        delivery.plan_versions(version_ids=version_ids)
    webhooks.plan_deliveries(ours)
