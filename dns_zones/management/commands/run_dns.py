"""Run the authoritative DNS server for the hosted zones until SIGINT or SIGTERM."""

import signal
import threading

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from dns_zones.server import DNSServer


def parse_listen(value: str) -> tuple[str, int]:
    """Split host:port (IPv6 hosts in brackets: [::1]:53) into a (host, port) tuple."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise CommandError(f"--listen must be host:port, not {value!r}")
    return host.strip("[]"), int(port)


class Command(BaseCommand):
    help = "Answer DNS queries (UDP and TCP) for the hosted zones, reloading zones as they change."

    def add_arguments(self, parser):
        parser.add_argument(
            "--listen",
            type=parse_listen,
            default=None,
            help="host:port to listen on (default: CERTHUB_DNS_LISTEN)",
        )

    def handle(self, *args, listen: tuple[str, int] | None = None, **options):
        server = DNSServer(listen or settings.CERTHUB_DNS_LISTEN)
        stop = threading.Event()
        # The handlers only set the event: the main thread does the shutdown, outside the signal.
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        try:
            server.start()
        except OSError as e:
            raise CommandError(f"cannot listen on {server.listen[0]} port {server.listen[1]}: {e}") from None
        self.stdout.write(f"Answering DNS on {server.address[0]} port {server.address[1]} (UDP and TCP)")
        self.stdout.flush()
        while not stop.wait(1):
            pass
        server.stop()
        self.stdout.write("DNS server stopped")
