"""Run a local node (HAProxy, nginx or MariaDB from Debian's packages) registered with CertHub.

Like run_pebble: the server runs in the foreground under var/nodes/<kind>-<name>/, CertHub's
workers deploy to it, and SIGTERM (honcho, Ctrl-C) stops it cleanly.
"""

import signal
import sys
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from distribution import delivery
from distribution.models import Node
from distribution.nodes.haproxy import HAProxyNode
from distribution.nodes.nginx import NginxNode

DEFAULT_ADDRESSES = {"nginx": "127.0.90.1", "mariadb": "127.0.91.1"}
DEFAULT_PORTS = {"nginx": 443, "mariadb": 3306}


class Command(BaseCommand):
    help = "Run a local HAProxy, nginx or MariaDB node and register it, so CertHub deploys certificates to it."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("kind", choices=[kind.value for kind in Node.Kind])
        parser.add_argument("--name", help="the node's name (default: local-<kind>)")
        parser.add_argument("--address", help="nginx/mariadb: the loopback address it serves on")
        parser.add_argument("--port", type=int, help="nginx/mariadb: the port it serves on (443, 3306)")
        parser.add_argument(
            "--queue", help="deliveries to this node go to this Celery queue (run a worker on this host with -Q QUEUE)"
        )

    def handle(
        self,
        *args: Any,
        kind: str,
        name: str | None,
        address: str | None,
        port: int | None,
        queue: str | None,
        **options,
    ):
        # Honcho stops its processes with SIGTERM; turn it into SystemExit so the server is stopped too.
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
        name = name or f"local-{kind}"
        workdir = settings.DATA_DIR / "nodes" / f"{kind}-{name}"
        workdir.mkdir(parents=True, exist_ok=True)
        address = address or DEFAULT_ADDRESSES.get(kind)
        port = port or DEFAULT_PORTS.get(kind)
        if kind == Node.Kind.HAPROXY:
            process = HAProxyNode.start(workdir, log=sys.stdout)
            node = self._register(name, kind, config=_config(workdir, queue))
            where = "load balancers on their own addresses from CERTHUB_LB_ADDRESS_POOL"
        elif kind == Node.Kind.NGINX:
            process = NginxNode.start(workdir, log=sys.stdout)
            node = self._register(name, kind, address=address, port=port, config=_config(workdir, queue))
            where = f"CDN endpoints on {address}:{port}"
        else:
            from distribution.databases import register_database_node
            from distribution.nodes.mariadb import MariaDBNode

            process = MariaDBNode.start(workdir, host=address, port=port, log=sys.stdout)
            node = register_database_node(name=name, process=process, queue=queue)
            where = f"managed databases on {address}:{port} as *.{node.platform_domain}"
        try:
            self.stdout.write(f"Node {name} ({kind}) is running and registered: {where}.\n")
            self.stdout.flush()
            process.process.wait()
        finally:
            process.stop()
        if process.process.returncode:
            raise CommandError(f"{kind} exited with status {process.process.returncode}")

    def _register(self, name: str, kind: str, **fields: Any) -> Node:
        node, _ = Node.objects.update_or_create(name=name, defaults={"kind": kind, "active": True, **fields})
        # A restarted server starts from its last file: apply the database's view once it runs.
        delivery.node_changed(node.pk)
        return node


def _config(workdir, queue: str | None) -> dict:
    return {"workdir": str(workdir), **({"queue": queue} if queue else {})}
