"""The products that use certificates, the nodes that serve them, and every deployment to them.

Load balancers (HAProxy nodes) and CDN endpoints (nginx nodes) carry customers' certificates;
a database node (MariaDB) carries the platform's own certificate for the host names of the
clusters on it. A Deployment is one version put on one target and then probed as a client would.
"""

import uuid

from django.db import models
from django.utils import timezone

from certhub.crypto import EncryptedTextField
from certhub.models import Team
from certificates.models import Certificate, CertificateVersion


class Node(models.Model):
    """A real server CertHub deploys to, registered by operators (admin or `run_node`)."""

    class Kind(models.TextChoices):
        HAPROXY = "haproxy", "HAProxy (load balancers)"
        NGINX = "nginx", "nginx (CDN edge)"
        MARIADB = "mariadb", "MariaDB (managed databases)"

    name = models.SlugField(max_length=63, unique=True)
    kind = models.CharField(max_length=10, choices=Kind.choices)
    region = models.CharField(max_length=20, default="local1")
    # Where clients reach what the node serves: an nginx edge's or a database node's address.
    address = models.GenericIPAddressField(null=True, blank=True)
    port = models.PositiveIntegerField(null=True, blank=True)
    # How CertHub reaches the node: its work directory, sockets, admin address (no secrets here).
    config = models.JSONField(default=dict, blank=True)
    # The node's secret (a database node's admin password), encrypted like a private key.
    secret = EncryptedTextField(blank=True)
    # A database node: the platform names of its clusters live under this domain, and this
    # certificate (a wildcard of it, issued to the platform team) is what the node serves.
    platform_domain = models.CharField(max_length=253, blank=True)
    certificate = models.ForeignKey(
        Certificate, null=True, blank=True, on_delete=models.PROTECT, related_name="database_nodes"
    )
    active = models.BooleanField(default=True)
    # Bumped by every change of what the node must serve (listeners, sites); the adapter applies
    # it (a reload) when it differs from applied_generation.
    config_generation = models.PositiveIntegerField(default=1)
    applied_generation = models.PositiveIntegerField(default=0)
    # One worker delivers to a node at a time: it holds this lease (healthchecks-style claim).
    busy_until = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.kind})"


class LoadBalancer(models.Model):
    class Status(models.TextChoices):
        NEW = "new"
        ACTIVE = "active"
        ERRORED = "errored"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="load_balancers")
    node = models.ForeignKey(Node, on_delete=models.PROTECT, related_name="load_balancers")
    name = models.CharField(max_length=255)
    region = models.CharField(max_length=20)
    # The load balancer's own address, from CERTHUB_LB_ADDRESS_POOL; its node binds the rules' ports there.
    ip = models.GenericIPAddressField(unique=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.NEW)
    redirect_http_to_https = models.BooleanField(default=False)
    # Where it forwards to (an addition to DigitalOcean's API: droplet ids mean nothing here).
    target_addresses = models.JSONField(default=list, blank=True)
    algorithm = models.CharField(max_length=20, default="round_robin")
    size = models.CharField(max_length=20, default="lb-small")
    size_unit = models.PositiveSmallIntegerField(default=1)
    health_check = models.JSONField(default=dict, blank=True)
    sticky_sessions = models.JSONField(default=dict, blank=True)
    http_idle_timeout_seconds = models.PositiveIntegerField(default=60)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [models.UniqueConstraint(fields=["team", "name"], name="load_balancer_name_unique_in_team")]

    def __str__(self) -> str:
        return self.name


class ForwardingRule(models.Model):
    class Protocol(models.TextChoices):
        HTTP = "http"
        HTTPS = "https"
        HTTP2 = "http2"
        TCP = "tcp"

    load_balancer = models.ForeignKey(LoadBalancer, on_delete=models.CASCADE, related_name="forwarding_rules")
    entry_protocol = models.CharField(max_length=10, choices=Protocol.choices)
    entry_port = models.PositiveIntegerField()
    target_protocol = models.CharField(max_length=10, choices=Protocol.choices)
    target_port = models.PositiveIntegerField()
    certificate = models.ForeignKey(
        Certificate, null=True, blank=True, on_delete=models.PROTECT, related_name="forwarding_rules"
    )
    tls_passthrough = models.BooleanField(default=False)

    class Meta:
        ordering = ["entry_port"]
        constraints = [
            models.UniqueConstraint(fields=["load_balancer", "entry_port"], name="forwarding_rule_port_unique")
        ]

    def __str__(self) -> str:
        return f"{self.entry_protocol}:{self.entry_port} -> {self.target_protocol}:{self.target_port}"


class CdnEndpoint(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="cdn_endpoints")
    node = models.ForeignKey(Node, on_delete=models.PROTECT, related_name="cdn_endpoints")
    origin = models.CharField(max_length=253)
    # The endpoint's own host name in the platform's CDN zone, resolving to its edge.
    endpoint = models.CharField(max_length=253, unique=True)
    custom_domain = models.CharField(max_length=253, blank=True)
    certificate = models.ForeignKey(
        Certificate, null=True, blank=True, on_delete=models.PROTECT, related_name="cdn_endpoints"
    )
    ttl = models.PositiveIntegerField(default=3600)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            # One edge serves a custom domain once: two endpoints may not claim the same SNI name.
            models.UniqueConstraint(
                fields=["custom_domain"], condition=~models.Q(custom_domain=""), name="cdn_custom_domain_unique"
            )
        ]

    def __str__(self) -> str:
        return self.endpoint


class DatabaseCluster(models.Model):
    class Status(models.TextChoices):
        CREATING = "creating"
        ONLINE = "online"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="database_clusters")
    node = models.ForeignKey(Node, on_delete=models.PROTECT, related_name="database_clusters")
    name = models.CharField(max_length=63)
    engine = models.CharField(max_length=10, default="mysql")
    version = models.CharField(max_length=10, default="8")
    num_nodes = models.PositiveSmallIntegerField(default=1)
    size = models.CharField(max_length=40)
    region = models.CharField(max_length=20)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.CREATING)
    host = models.CharField(max_length=253, unique=True)
    db_name = models.CharField(max_length=64, unique=True)
    db_user = models.CharField(max_length=32, unique=True)
    password = EncryptedTextField()
    tags = models.JSONField(default=list, blank=True)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [models.UniqueConstraint(fields=["team", "name"], name="database_name_unique_in_team")]

    def __str__(self) -> str:
        return self.name


class Deployment(models.Model):
    """One certificate version put on one target, then probed: the record of where it is served."""

    class Target(models.TextChoices):
        LOAD_BALANCER = "load_balancer"
        CDN_ENDPOINT = "cdn_endpoint"
        DATABASE_NODE = "database_node"

    class Status(models.TextChoices):
        PENDING = "pending"  # due at next_attempt_at (first try or retry)
        VERIFIED = "verified"  # deployed and the probe saw this version's serial
        FAILED = "failed"  # retries exhausted; the team was told
        SUPERSEDED = "superseded"  # a newer version (or a detach) made it moot

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="deployments")
    certificate = models.ForeignKey(Certificate, on_delete=models.CASCADE, related_name="deployments")
    version = models.ForeignKey(CertificateVersion, on_delete=models.CASCADE, related_name="deployments")
    node = models.ForeignKey(Node, on_delete=models.CASCADE, related_name="deployments")
    target_kind = models.CharField(max_length=20, choices=Target.choices)
    target_id = models.CharField(max_length=64)
    target_name = models.CharField(max_length=255)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    created_at = models.DateTimeField(default=timezone.now)
    deployed_at = models.DateTimeField(null=True, blank=True)
    verified_at = models.DateTimeField(null=True, blank=True)
    # The serial the probe was served (lowercase hex, as the version stores it).
    served_serial = models.CharField(max_length=64, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            # Idempotent by target and version: a redelivered event plans nothing twice.
            models.UniqueConstraint(fields=["target_kind", "target_id", "version"], name="deployment_once")
        ]
        indexes = [models.Index(fields=["node", "status", "next_attempt_at"], name="deployment_due")]

    def __str__(self) -> str:
        return f"{self.version} -> {self.target_kind} {self.target_name} ({self.status})"


class Webhook(models.Model):
    """A team's own endpoint told of every certificate event, signed as Standard Webhooks says."""

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="webhooks")
    url = models.URLField(max_length=500)
    # "whsec_" + base64 of 24 random bytes; shown once at creation, stored encrypted.
    secret = EncryptedTextField()
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return self.url


class WebhookDelivery(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending"
        DELIVERED = "delivered"
        FAILED = "failed"

    webhook = models.ForeignKey(Webhook, on_delete=models.CASCADE, related_name="deliveries")
    event_id = models.UUIDField()
    kind = models.CharField(max_length=64)
    payload = models.JSONField(default=dict)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    response_status = models.PositiveIntegerField(null=True, blank=True)
    response_body = models.TextField(blank=True)  # the first 500 characters, for the deliveries page
    last_error = models.TextField(blank=True)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    next_attempt_at = models.DateTimeField(default=timezone.now, db_index=True)
    created_at = models.DateTimeField(default=timezone.now)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [models.UniqueConstraint(fields=["webhook", "event_id"], name="webhook_delivery_once")]

    def __str__(self) -> str:
        return f"{self.kind} -> {self.webhook} ({self.status})"
