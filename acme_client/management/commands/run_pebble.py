"""Run a local Pebble (Let's Encrypt's test CA) in the foreground for the embedded default."""

import signal
import sys
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand

from acme_client.pebble import Pebble


class Command(BaseCommand):
    help = "Run Pebble on loopback, validating dns-01 challenges through CertHub's DNS server."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--port", type=int, default=14000, help="ACME listener port (default 14000)")
        parser.add_argument(
            "--management-port", type=int, default=15000, help="management listener port (default 15000)"
        )
        parser.add_argument(
            "--sleep", action="store_true", help="keep Pebble's random validation delay (off: validate at once)"
        )

    def handle(self, *args: Any, port: int, management_port: int, sleep: bool, **options: Any) -> None:
        # Honcho stops its processes with SIGTERM; turn it into SystemExit so Pebble is stopped too.
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
        host, dns_port = settings.CERTHUB_DNS_LISTEN
        env = {} if sleep else {"PEBBLE_VA_NOSLEEP": "1"}
        pebble = Pebble.start(
            settings.DATA_DIR / "pebble",
            (host, dns_port),
            env=env,
            port=port,
            management_port=management_port,
            log=sys.stdout,
        )
        try:
            # Pebble makes a new root at every start: keep it where clients (curl --cacert) find it.
            root = settings.DATA_DIR / "pebble" / "root.pem"
            root.write_text(pebble.root_pem())
            self.stdout.write(
                f"Pebble is running, validating through DNS at {host}:{dns_port}. Use:\n"
                f"  ACME_DIRECTORY_URL={pebble.directory_url}\n"
                f"  ACME_CA_BUNDLE={pebble.ca_bundle}\n"
                f"The root of the certificates it issues is in {root}.\n"
            )
            self.stdout.flush()
            pebble.process.wait()
        finally:
            pebble.stop()
        if pebble.process.returncode:
            sys.exit(pebble.process.returncode)
