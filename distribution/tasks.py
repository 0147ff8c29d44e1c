"""Celery tasks of delivery: thin, take ids, idempotent and safe to run twice."""

from celery import shared_task

# A retry further off than this is left to the beat sweep rather than a task countdown.
LONGEST_COUNTDOWN = 300


def enqueue_delivery(node_id: int, *, countdown: float | None = None) -> None:
    """Queue a delivery to the node, on the node's own queue when it has one.

    A node whose files and sockets are on its own machine names a queue in its config
    ({"queue": "..."}); a worker there consumes it (`celery -A certhub worker -Q <queue>`).
    """
    from distribution.models import Node

    config = Node.objects.filter(pk=node_id).values_list("config", flat=True).first() or {}
    queue = config.get("queue") if isinstance(config, dict) else None
    deliver_node.apply_async((node_id,), countdown=countdown, **({"queue": queue} if queue else {}))


@shared_task(acks_late=True, ignore_result=True)
def deliver_node(node_id: int) -> None:
    """Apply the node's configuration and run its due deployments; come back for the retries."""
    from distribution import delivery

    delay = delivery.deliver_node(node_id)
    if delay is not None and delay <= LONGEST_COUNTDOWN:
        enqueue_delivery(node_id, countdown=delay)


@shared_task(acks_late=True, ignore_result=True)
def deliver_due() -> int:
    """Beat: visit every node with due work (retries, lapsed leases, changes whose task was lost)."""
    from distribution import delivery

    nodes = delivery.nodes_with_due_work()
    for node_id in nodes:
        enqueue_delivery(node_id)
    return len(nodes)


@shared_task(acks_late=True, ignore_result=True)
def deliver_webhook(delivery_id: int) -> None:
    from distribution import webhooks

    delay = webhooks.deliver(delivery_id)
    if delay is not None and delay <= LONGEST_COUNTDOWN:
        deliver_webhook.apply_async((delivery_id,), countdown=delay)


@shared_task(acks_late=True, ignore_result=True)
def deliver_due_webhooks() -> int:
    from distribution import webhooks

    due = webhooks.due_deliveries()
    for delivery_id in due:
        deliver_webhook.delay(delivery_id)
    return len(due)
