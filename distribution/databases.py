"""Managed MySQL databases: database nodes registered by operators, clusters created on them for teams.

As at DigitalOcean, a database's TLS certificate is the platform's, not the customer's: each node
has a platform domain `<node>.<CERTHUB_DATABASE_ZONE>` and a Let's Encrypt wildcard for it, issued
to the platform team and deployed to the node like any other version (a DATABASE_NODE target).
A cluster is a database and a user on a node, reached at `<name>-<random>.<platform domain>`,
which the platform zone resolves to the node's address. It is online once its database exists and
the node serves the current version of its certificate (verified by a probe).
"""

import logging
import re
import secrets
import string
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Count, QuerySet

from certhub.errors import Invalid
from certhub.models import Team
from certificates import services as certificate_services
from certificates.models import Certificate
from distribution import delivery, platform
from distribution.adapters.mariadb import node_admin
from distribution.models import DatabaseCluster, Deployment, Node
from distribution.nodes.mariadb import MariaDBError, MariaDBNode

log = logging.getLogger(__name__)

NAME = re.compile(r"^[a-z][a-z0-9-]{1,61}[a-z0-9]$")
SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")
REGION = re.compile(r"^[a-z]{2,6}[0-9]{1,2}$")
TAG = re.compile(r"^[A-Za-z0-9:_-]{1,255}$")
ENGINES = ("pg", "mysql", "redis", "valkey", "mongodb", "kafka", "opensearch", "advanced_pg", "advanced_mysql")
VERSIONS = ("8",)
MAX_TAGS = 50
SUFFIX_LENGTH = 6
# A DNS label is at most 63 octets: the name part of a host leaves room for "-" and the suffix.
HOST_NAME_PART = 63 - 1 - SUFFIX_LENGTH
NAME_TAKEN = "your team already has a database cluster with this name"


class NodeUnavailable(Exception):
    """The database node could not be reached or refused the change; nothing was kept, try again."""


def register_database_node(*, name: str, process: MariaDBNode, queue: str | None = None) -> Node:
    """Record a running mariadbd as database node `name` and give it the platform certificate of its domain.

    Idempotent: a restart (of the same name, perhaps on another port) updates the row, keeps the
    certificate and asks delivery to check that the node serves its current version.
    """
    existing = Node.objects.filter(name=name).first()
    if existing is not None and existing.kind != Node.Kind.MARIADB:
        raise ValueError(f"node {name} is a {existing.kind} node, not a database node")
    with transaction.atomic():
        zone = platform.platform_zone(settings.CERTHUB_DATABASE_ZONE)
        node, _ = Node.objects.update_or_create(
            name=name,
            defaults={
                "kind": Node.Kind.MARIADB, "address": process.host, "port": process.port,
                "config": {
                    "workdir": str(process.workdir), "socket": str(process.socket), "admin_user": process.admin_user,
                    "ssl_cert": str(process.cert_path), "ssl_key": str(process.key_path),
                    **({"queue": queue} if queue else {}),
                },
                "secret": process.admin_password, "platform_domain": f"{name}.{zone.name}", "active": True,
            },
        )  # fmt: skip
        if node.certificate_id is None:
            node.certificate = _platform_certificate(node)
            node.save(update_fields=["certificate"])
        # After a move to another address, the clusters' names follow the node.
        for host in node.database_clusters.values_list("host", flat=True):
            platform.publish_address(zone=zone, name=host, address=node.address)
        # A restarted node serves what its work directory held: apply_config puts the current version back.
        delivery.node_changed(node.pk)
    node.refresh_from_db()
    return node


def _platform_certificate(node: Node) -> Certificate:
    """The node's wildcard of the platform team: the one requested before under its name, or a new request."""
    team = platform.platform_team()
    name = f"node-{node.name}"
    certificate = Certificate.objects.filter(team=team, name=name).first()
    if certificate is not None:
        return certificate
    return certificate_services.certificate_request(
        team=team, data={"name": name, "type": "lets_encrypt", "dns_names": ["*." + node.platform_domain]}
    )


def _required(data: dict[str, Any], field: str) -> Any:
    value = data.get(field)
    if value in (None, ""):
        raise Invalid({field: ["is required"]})
    return value


def clean(data: Any) -> dict[str, Any]:
    """A create request (DigitalOcean's `database_cluster`); fields not used here are ignored."""
    if not isinstance(data, dict):
        raise Invalid({"": ["the request body must be a JSON object"]})
    name = _required(data, "name")
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise Invalid(
            {"name": ["must be 3 to 63 lowercase letters, digits and dashes, starting with a letter and "
                      "not ending with a dash"]}
        )  # fmt: skip
    engine = _required(data, "engine")
    if engine in ENGINES and engine != "mysql":
        raise Invalid({"engine": ["only mysql is offered"]})
    if engine != "mysql":
        raise Invalid({"engine": ["must be mysql"]})
    num_nodes = _required(data, "num_nodes")
    if isinstance(num_nodes, bool) or not isinstance(num_nodes, int) or not 1 <= num_nodes <= 3:
        raise Invalid({"num_nodes": ["must be an integer from 1 to 3"]})
    size = _required(data, "size")
    if not isinstance(size, str) or not SLUG.fullmatch(size):
        raise Invalid({"size": ["must be a size slug such as db-s-1vcpu-1gb"]})
    region = _required(data, "region")
    if not isinstance(region, str) or not REGION.fullmatch(region):
        raise Invalid({"region": ["must be a region slug such as nyc3"]})
    version = data.get("version")
    version = VERSIONS[0] if version in (None, "") else str(version)
    if version not in VERSIONS:
        raise Invalid({"version": [f"must be one of {', '.join(VERSIONS)} for mysql"]})
    tags = data.get("tags")
    tags = [] if tags is None else tags
    valid = isinstance(tags, list) and all(isinstance(t, str) and TAG.fullmatch(t) for t in tags)
    if not valid or len(tags) > MAX_TAGS:
        raise Invalid({"tags": [f"must be a list of at most {MAX_TAGS} tags (letters, digits, colons, dashes, "
                                "underscores)"]})  # fmt: skip
    return {
        "name": name, "engine": engine, "num_nodes": num_nodes, "size": size, "region": region, "version": version,
        "tags": list(dict.fromkeys(tags)),
    }  # fmt: skip


def _pick_node() -> Node:
    node = (
        Node.objects.filter(kind=Node.Kind.MARIADB, active=True, certificate__isnull=False)
        .exclude(platform_domain="")
        .annotate(load=Count("database_clusters"))
        .order_by("load", "pk")
        .first()
    )
    if node is None:
        raise Invalid({"region": ["no database node is running; an operator must start one (run_node mariadb)"]})
    return node


def _host(name: str, node: Node) -> str:
    suffix = "".join(secrets.choice(string.ascii_lowercase) for _ in range(SUFFIX_LENGTH))
    return f"{name[:HOST_NAME_PART].rstrip('-')}-{suffix}.{node.platform_domain}"


def cluster_create(*, team: Team, data: Any) -> tuple[DatabaseCluster, str]:
    """Create the database and its user on the least loaded node, then the row and its host name.

    The row exists only once the database does, so a cluster seen as `creating` waits only for the
    node's certificate. Returns the cluster and its user's password.
    """
    cleaned = clean(data)
    if DatabaseCluster.objects.filter(team=team, name=cleaned["name"]).exists():
        raise Invalid({"name": [NAME_TAKEN]})
    node = _pick_node()
    # Names go into SQL as identifiers: only hex after a fixed prefix, never anything the caller chose.
    db_name, db_user = "db_" + secrets.token_hex(6), "u_" + secrets.token_hex(6)
    password = secrets.token_urlsafe(24)
    _on_node(node, lambda admin: admin.create_database(db_name, db_user, password))
    zone = platform.platform_zone(settings.CERTHUB_DATABASE_ZONE)
    try:
        for attempt in range(5):  # a host name drawn twice: the unique host decides
            try:
                with transaction.atomic():
                    cluster = DatabaseCluster.objects.create(
                        team=team, node=node, host=_host(cleaned["name"], node), db_name=db_name, db_user=db_user,
                        password=password, **cleaned,
                    )  # fmt: skip
                    platform.publish_address(zone=zone, name=cluster.host, address=node.address)
                break
            except IntegrityError:
                if DatabaseCluster.objects.filter(team=team, name=cleaned["name"]).exists():
                    raise Invalid({"name": [NAME_TAKEN]}) from None
                if attempt == 4:
                    raise
    except BaseException:
        try:
            _on_node(node, lambda admin: admin.drop_database(db_name, db_user))
        except NodeUnavailable:
            pass  # logged; the original error is the one to answer with
        raise
    refresh_status(DatabaseCluster.objects.filter(pk=cluster.pk))
    cluster.refresh_from_db()
    return cluster, password


def cluster_delete(*, cluster: DatabaseCluster) -> None:
    """Drop the database and its user on the node, withdraw the host name, delete the row."""
    _on_node(cluster.node, lambda admin: admin.drop_database(cluster.db_name, cluster.db_user))
    with transaction.atomic():
        zone = platform.platform_zone(settings.CERTHUB_DATABASE_ZONE)
        platform.withdraw_address(zone=zone, name=cluster.host)
        cluster.delete()


def _on_node(node: Node, change) -> None:
    try:
        with node_admin(node) as admin:
            change(admin)
    except MariaDBError as e:
        # The error names neither password: MariaDBAdmin masks them.
        log.warning("database node %s: %s", node.name, e)
        raise NodeUnavailable(f"the database node {node.name} could not make the change; try again") from None


def serves_current_certificate(node: Node) -> bool:
    """True when a probe saw the node serve the current version of its platform certificate."""
    certificate = node.certificate
    if certificate is None or certificate.current_version_id is None:
        return False
    return Deployment.objects.filter(
        target_kind=Deployment.Target.DATABASE_NODE, target_id=str(node.pk), version_id=certificate.current_version_id,
        status=Deployment.Status.VERIFIED,
    ).exists()  # fmt: skip


def refresh_status(clusters: QuerySet) -> None:
    """Bring `creating` clusters online whose node serves its current certificate."""
    node_ids = set(clusters.filter(status=DatabaseCluster.Status.CREATING).values_list("node_id", flat=True))
    for node in Node.objects.filter(pk__in=node_ids).select_related("certificate"):
        if serves_current_certificate(node):
            DatabaseCluster.objects.filter(node=node, status=DatabaseCluster.Status.CREATING).update(
                status=DatabaseCluster.Status.ONLINE
            )


def clusters_of(team: Team, *, tag: str | None = None) -> QuerySet:
    """The team's clusters (statuses brought up to date), with only those tagged `tag` if given."""
    clusters = DatabaseCluster.objects.filter(team=team)
    if tag:
        # In Python: JSON containment is not available on SQLite (the embedded default), and a team's
        # clusters are few.
        clusters = clusters.filter(pk__in=[pk for pk, tags in clusters.values_list("pk", "tags") if tag in tags])
    refresh_status(clusters)
    return clusters.select_related("node")
