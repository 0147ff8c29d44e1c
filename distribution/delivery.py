"""Delivery: plan a deployment per target for each new version, run them node by node, record each.

A deployment is planned once per (target, version) (a unique constraint), so a redelivered
event plans nothing twice; only a certificate's current version is ever planned or run, so an
older version never replaces a newer one. One worker delivers to a node at a time (a lease on
the node row); it applies a changed node configuration first, then takes every due deployment
of the node as one batch (one reload at most, where the node kind reloads at all), probes each
target as a client would and records the serial it was served. A failure is retried with
growing delays for CERTHUB_DELIVERY_RETRY_BUDGET_SECONDS, then the team is emailed.
"""

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from certificates.models import Certificate, CertificateVersion
from distribution import notifications
from distribution.adapters import AdapterError, TargetGone, adapter_for
from distribution.models import CdnEndpoint, Deployment, ForwardingRule, LoadBalancer, Node
from distribution.tasks import enqueue_delivery

log = logging.getLogger(__name__)

Target = Deployment.Target
Status = Deployment.Status
NODE_LEASE_SECONDS = 120
# The lease is renewed this often while a worker delivers: it only lapses when the worker died.
LEASE_RENEW_SECONDS = 10
BATCH = 1000


class LeaseLost(Exception):
    """Another worker took the node (this one stalled past its lease): stop without writing more."""


class Lease:
    """A worker's hold on a node: the busy_until value it wrote is its token."""

    def __init__(self, node_id: int, until: datetime) -> None:
        self.node_id = node_id
        self.until = until
        self.renewed = time.monotonic()

    @classmethod
    def claim(cls, node_id: int) -> "Lease | None":
        now = timezone.now()
        until = now + timedelta(seconds=NODE_LEASE_SECONDS)
        claimed = (
            Node.objects.filter(pk=node_id, active=True)
            .filter(Q(busy_until__isnull=True) | Q(busy_until__lt=now))
            .update(busy_until=until)
        )
        return cls(node_id, until) if claimed == 1 else None

    def keep(self, *, force: bool = False) -> None:
        """Renew the lease if it is due for it; raise LeaseLost if another worker holds the node now."""
        if not force and time.monotonic() - self.renewed < LEASE_RENEW_SECONDS:
            return
        until = timezone.now() + timedelta(seconds=NODE_LEASE_SECONDS)
        if Node.objects.filter(pk=self.node_id, busy_until=self.until).update(busy_until=until) != 1:
            raise LeaseLost(f"node {self.node_id}: lease taken over")
        self.until, self.renewed = until, time.monotonic()

    def release(self) -> None:
        Node.objects.filter(pk=self.node_id, busy_until=self.until).update(busy_until=None)


@dataclass(frozen=True)
class TargetRef:
    kind: str
    id: str
    name: str
    node_id: int


def plan_versions(*, version_ids: list[int]) -> int:
    """Plan each version that is still its certificate's current one on every target; return how many were new.

    A batch of a thousand renewals costs a few queries: the targets of all the certificates at once,
    one insert of the deployments (the unique constraint keeps a redelivered event from planning
    twice), one update superseding the older pending ones, one delivery task per node.
    """
    versions = list(
        CertificateVersion.objects.filter(pk__in=set(version_ids), certificate__current_version_id=F("pk"))
        .select_related("certificate")
        .only("pk", "certificate_id", "certificate__team_id")
    )
    if not versions:
        return 0  # deleted, or already replaced by a newer version: nothing to put anywhere
    by_certificate = {version.certificate_id: version for version in versions}
    targets: dict = {}
    rules = ForwardingRule.objects.filter(certificate_id__in=by_certificate).values_list(
        "certificate_id", "load_balancer_id", "load_balancer__name", "load_balancer__node_id"
    )
    for certificate_id, lb_id, name, node_id in rules.order_by().distinct():
        targets.setdefault(certificate_id, []).append(TargetRef(Target.LOAD_BALANCER, str(lb_id), name, node_id))
    endpoints = CdnEndpoint.objects.filter(certificate_id__in=by_certificate).values_list(
        "certificate_id", "pk", "endpoint", "node_id"
    )
    for certificate_id, pk, name, node_id in endpoints:
        targets.setdefault(certificate_id, []).append(TargetRef(Target.CDN_ENDPOINT, str(pk), name, node_id))
    nodes = Node.objects.filter(certificate_id__in=by_certificate, kind=Node.Kind.MARIADB).values_list(
        "certificate_id", "pk", "name"
    )
    for certificate_id, pk, name in nodes:
        targets.setdefault(certificate_id, []).append(TargetRef(Target.DATABASE_NODE, str(pk), name, pk))
    planned = [
        Deployment(
            team_id=version.certificate.team_id,
            certificate_id=certificate_id,
            version_id=version.pk,
            node_id=target.node_id,
            target_kind=target.kind,
            target_id=target.id,
            target_name=target.name,
        )
        for certificate_id, version in by_certificate.items()
        for target in targets.get(certificate_id, [])
    ]
    if not planned:
        return 0
    current = [version.pk for version in versions]
    before = Deployment.objects.filter(version_id__in=current).count()
    Deployment.objects.bulk_create(planned, ignore_conflicts=True, batch_size=500)
    created = Deployment.objects.filter(version_id__in=current).count() - before
    Deployment.objects.filter(certificate_id__in=by_certificate, status=Status.PENDING).exclude(
        version_id__in=current
    ).update(status=Status.SUPERSEDED)
    for node_id in {deployment.node_id for deployment in planned}:
        kick_on_commit(node_id)
    return created


def plan_current(*, target: TargetRef, certificate: Certificate) -> Deployment | None:
    """Deploy the certificate's current version to a target it was just attached to."""
    if certificate.current_version_id is None:
        return None  # nothing issued yet: its first version is planned when it comes
    return plan(target=target, certificate=certificate, version_id=certificate.current_version_id)


def plan(*, target: TargetRef, certificate: Certificate, version_id: int) -> Deployment:
    """Plan one deployment (idempotent) and supersede older pending ones of the same target."""
    deployment, created = Deployment.objects.get_or_create(
        target_kind=target.kind, target_id=target.id, version_id=version_id,
        defaults={
            "team_id": certificate.team_id, "certificate": certificate, "node_id": target.node_id,
            "target_name": target.name,
        },
    )  # fmt: skip
    if created:
        Deployment.objects.filter(
            target_kind=target.kind, target_id=target.id, certificate=certificate, status=Status.PENDING
        ).exclude(pk=deployment.pk).update(status=Status.SUPERSEDED)
    elif deployment.status in (Status.FAILED, Status.SUPERSEDED):
        # Attached again, or the target changed: this is a new try with a new retry budget.
        Deployment.objects.filter(pk=deployment.pk).update(
            status=Status.PENDING, attempts=0, last_error="", created_at=timezone.now(), next_attempt_at=timezone.now()
        )
        deployment.status = Status.PENDING
    if deployment.status == Status.PENDING:
        kick_on_commit(target.node_id)
    return deployment


def node_changed(node_id: int) -> None:
    """Mark the node's configuration changed (in the caller's transaction) and deliver after commit."""
    Node.objects.filter(pk=node_id).update(config_generation=F("config_generation") + 1)
    kick_on_commit(node_id)


def kick_on_commit(node_id: int) -> None:
    """Queue one delivery to the node after commit, however many deployments the transaction planned."""
    connection = transaction.get_connection()
    # Already queued in this transaction (a burst of renewals plans a thousand deployments at once)?
    if any(getattr(callback, "node_id", None) == node_id for _, callback, _ in connection.run_on_commit):
        return

    def kick() -> None:
        enqueue_delivery(node_id)

    kick.node_id = node_id
    transaction.on_commit(kick, robust=True)


def deliver_node(node_id: int) -> float | None:
    """Apply the node's configuration and run its due deployments; return seconds until more are due.

    None when another worker holds the node: that one looks for new work before it lets go.
    """
    claimed = False
    while (lease := Lease.claim(node_id)) is not None:
        claimed = True
        try:
            applied = _deliver_claimed(node_id, lease)
        except LeaseLost:
            log.warning("node %s: another worker took over its deliveries", node_id)
            return None
        finally:
            lease.release()
        # Work that arrived while this worker held the lease saw the node busy and left it here. A
        # configuration that failed to apply waits for the beat sweep (seconds), not a tight loop.
        if not _has_due_work(node_id, config=applied):
            break
    return seconds_until_due(node_id) if claimed else None


def _has_due_work(node_id: int, *, config: bool = True) -> bool:
    node = Node.objects.filter(pk=node_id, active=True).first()
    if node is None:
        return False
    return (config and node.applied_generation != node.config_generation) or _due(node_id).exists()


def _due(node_id: int):
    return Deployment.objects.filter(node_id=node_id, status=Status.PENDING, next_attempt_at__lte=timezone.now())


def seconds_until_due(node_id: int) -> float | None:
    upcoming = (
        Deployment.objects.filter(node_id=node_id, status=Status.PENDING)
        .order_by("next_attempt_at")
        .values_list("next_attempt_at", flat=True)
        .first()
    )
    if upcoming is None:
        return None
    return max(0.0, (upcoming - timezone.now()).total_seconds())


def _deliver_claimed(node_id: int, lease: Lease) -> bool:
    """Deliver to the node while holding `lease`; return whether its configuration is applied."""
    node = Node.objects.get(pk=node_id)
    adapter = adapter_for(node)
    applied = True
    if node.applied_generation != node.config_generation:
        applied = _apply_config(node, adapter)
        lease.keep(force=True)
    while True:
        batch = _take_batch(node_id)
        if not batch:
            return applied
        _run_batch(adapter, batch, lease)
        lease.keep(force=True)


def _apply_config(node: Node, adapter) -> bool:
    generation = node.config_generation
    try:
        adapter.apply_config()
    except Exception as e:
        message = str(e) if isinstance(e, AdapterError) else f"unexpected {type(e).__name__}"
        log.warning(
            "node %s: configuration not applied: %s", node.name, message, exc_info=not isinstance(e, AdapterError)
        )
        # Customers see that it failed, not another team's configuration in the node's message.
        LoadBalancer.objects.filter(node=node, status=LoadBalancer.Status.NEW).update(
            status=LoadBalancer.Status.ERRORED, last_error="the load balancer node could not apply its configuration"
        )
        return False  # retried at the next delivery (beat), the generation still differs
    Node.objects.filter(pk=node.pk).update(applied_generation=generation)
    # A load balancer is active once its listeners are up: every certificate it uses has a version.
    for lb in LoadBalancer.objects.filter(node=node).exclude(status=LoadBalancer.Status.ACTIVE):
        waiting = lb.forwarding_rules.filter(certificate__isnull=False, certificate__current_version__isnull=True)
        if not waiting.exists():
            LoadBalancer.objects.filter(pk=lb.pk).update(status=LoadBalancer.Status.ACTIVE, last_error="")
    return True


def _take_batch(node_id: int) -> list[Deployment]:
    batch = []
    for deployment in (
        _due(node_id)
        .select_related("certificate", "version")
        .defer("version__private_key_pem", "version__leaf_pem", "version__chain_pem")
        .order_by("next_attempt_at", "id")[:BATCH]
    ):
        if deployment.certificate.current_version_id != deployment.version_id:
            # A newer version came meanwhile (its own deployment is planned): never go backwards.
            Deployment.objects.filter(pk=deployment.pk).update(status=Status.SUPERSEDED)
            continue
        batch.append(deployment)
    return batch


def _run_batch(adapter, batch: list[Deployment], lease: Lease) -> None:
    started = time.monotonic()
    lease.keep(force=True)
    try:
        adapter.deploy(batch)
        error = None
    except AdapterError as e:
        error = e
    except Exception as e:  # a bug or an odd input must cost a retry, not leave the batch pending forever
        log.exception("node %s: deploying a batch failed", adapter.node.name)
        error = AdapterError(f"unexpected {type(e).__name__} while deploying")
    deploy_ms = (time.monotonic() - started) * 1000
    deployed_at = timezone.now()
    for deployment in batch:
        deployment.attempts += 1
        if error is not None:
            _record_failure(deployment, str(error), permanent=error.permanent, duration_ms=deploy_ms)
            continue
        lease.keep()
        probe_started = time.monotonic()
        try:
            served = adapter.probe(deployment)
        except TargetGone as e:
            Deployment.objects.filter(pk=deployment.pk, status=Status.PENDING).update(
                status=Status.SUPERSEDED, last_error=str(e)
            )
            continue
        except (AdapterError, OSError, ValueError) as e:
            _record_failure(
                deployment, f"deployed, but the probe failed: {e}", permanent=False,
                duration_ms=deploy_ms + (time.monotonic() - probe_started) * 1000, deployed_at=deployed_at,
            )  # fmt: skip
            continue
        duration_ms = deploy_ms + (time.monotonic() - probe_started) * 1000
        if served != deployment.version.serial:
            _record_failure(
                deployment, f"deployed, but the target serves serial {served}, not {deployment.version.serial}",
                permanent=False, duration_ms=duration_ms, deployed_at=deployed_at, served_serial=served,
            )  # fmt: skip
            continue
        now = timezone.now()
        if deployment.target_kind == Target.LOAD_BALANCER:
            LoadBalancer.objects.filter(pk=deployment.target_id).exclude(status=LoadBalancer.Status.ACTIVE).update(
                status=LoadBalancer.Status.ACTIVE, last_error=""
            )
        # Only a deployment still pending: one superseded meanwhile stays superseded.
        Deployment.objects.filter(pk=deployment.pk, status=Status.PENDING).update(
            status=Status.VERIFIED, attempts=deployment.attempts, last_error="", duration_ms=round(duration_ms),
            deployed_at=deployed_at, verified_at=now, served_serial=served,
        )  # fmt: skip


def retry_delay(attempts: int) -> float:
    """Seconds before retry number `attempts`: doubling from the base, capped."""
    base = settings.CERTHUB_DELIVERY_RETRY_BASE_DELAY
    return min(base * 2 ** max(attempts - 1, 0), settings.CERTHUB_DELIVERY_RETRY_MAX_DELAY)


def _record_failure(
    deployment: Deployment,
    reason: str,
    *,
    permanent: bool,
    duration_ms: float,
    deployed_at: datetime | None = None,
    served_serial: str = "",
) -> None:
    now = timezone.now()
    budget_left = deployment.created_at + timedelta(seconds=settings.CERTHUB_DELIVERY_RETRY_BUDGET_SECONDS) - now
    delay = retry_delay(deployment.attempts)
    give_up = permanent or budget_left.total_seconds() < delay
    updated = Deployment.objects.filter(pk=deployment.pk, status=Status.PENDING).update(
        status=Status.FAILED if give_up else Status.PENDING, attempts=deployment.attempts, last_error=reason,
        duration_ms=round(duration_ms), deployed_at=deployed_at, served_serial=served_serial,
        next_attempt_at=now + timedelta(seconds=delay),
    )  # fmt: skip
    log.warning(
        "deployment %s (%s %s) failed (attempt %d%s): %s", deployment.pk, deployment.target_kind,
        deployment.target_name, deployment.attempts, ", giving up" if give_up else "", reason,
    )  # fmt: skip
    if give_up and updated:
        transaction.on_commit(lambda: notifications.deployment_failed(deployment.pk), robust=True)


def nodes_with_due_work() -> list[int]:
    """Nodes a worker should visit now: due deployments, a changed configuration, a lapsed lease."""
    now = timezone.now()
    free = Node.objects.filter(active=True).filter(Q(busy_until__isnull=True) | Q(busy_until__lt=now))
    changed = free.exclude(applied_generation=F("config_generation")).values_list("pk", flat=True)
    due = free.filter(deployments__status=Status.PENDING, deployments__next_attempt_at__lte=now).values_list(
        "pk", flat=True
    )
    return sorted(set(changed) | set(due))
