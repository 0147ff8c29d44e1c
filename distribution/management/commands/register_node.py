"""Register (or update) a node that runs elsewhere, so CertHub deploys certificates to it."""

import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from distribution import delivery
from distribution.models import Node


class Command(BaseCommand):
    help = "Register a node: its kind, where it serves, how CertHub reaches it (JSON), and its secret from a file."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("name")
        parser.add_argument("--kind", required=True, choices=[kind.value for kind in Node.Kind])
        parser.add_argument("--address", help="the address clients reach (nginx edges, database nodes)")
        parser.add_argument("--port", type=int)
        parser.add_argument("--region", default="local1")
        parser.add_argument("--config", default="{}", help='how CertHub reaches it, e.g. {"workdir": "/srv/haproxy"}')
        parser.add_argument("--secret-file", type=Path, help="a file holding the node's secret (admin password)")
        parser.add_argument("--inactive", action="store_true", help="register it without deploying to it")

    def handle(self, *args: Any, name: str, kind: str, config: str, secret_file: Path | None, **options: Any) -> None:
        try:
            parsed = json.loads(config)
        except json.JSONDecodeError as e:
            raise CommandError(f"--config must be a JSON object: {e}") from None
        if not isinstance(parsed, dict):
            raise CommandError("--config must be a JSON object")
        fields = {
            "kind": kind, "address": options["address"], "port": options["port"], "region": options["region"],
            "config": parsed, "active": not options["inactive"],
        }  # fmt: skip
        if secret_file is not None:
            try:
                fields["secret"] = secret_file.read_text().strip()
            except OSError as e:
                raise CommandError(f"cannot read {secret_file}: {e}") from None
        node, created = Node.objects.update_or_create(name=name, defaults=fields)
        delivery.node_changed(node.pk)
        self.stdout.write(f"{'Registered' if created else 'Updated'} node {node.name} ({node.kind}).\n")
