"""Announce zone changes to our DNS servers with DNS NOTIFY (RFC 1996).

run_dns polls the database for changed serials every CERTHUB_DNS_RELOAD_INTERVAL; a NOTIFY
makes it look at once. It is best effort, one UDP datagram a server with no retry: a lost one
only means the change is served at the next poll.
"""

import logging
import socket

import dns.flags
import dns.message
import dns.opcode
import dns.rdatatype
from django.conf import settings
from django.db import transaction

log = logging.getLogger(__name__)
_warned = False


def notify_message(zone_name: str) -> bytes:
    message = dns.message.make_query(zone_name.rstrip(".") + ".", dns.rdatatype.SOA)
    message.set_opcode(dns.opcode.NOTIFY)
    message.flags = dns.flags.AA | (message.flags & ~dns.flags.RD)  # RFC 1996 3.7: AA set
    return message.to_wire()


def zone_changed_on_commit(zone_name: str) -> None:
    """Send the NOTIFY once the caller's transaction commits (at once outside one)."""
    transaction.on_commit(lambda: zone_changed(zone_name), robust=True)


def zone_changed(zone_name: str) -> None:
    """Send a NOTIFY for the zone to every server in CERTHUB_DNS_NOTIFY; never raise."""
    if not settings.CERTHUB_DNS_NOTIFY:
        return
    global _warned
    wire = notify_message(zone_name)
    for host, port in settings.CERTHUB_DNS_NOTIFY:
        try:
            # Every address of the name (IPv4 and IPv6): which one the server listens on is unknown.
            for family, _, _, _, address in socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM):
                with socket.socket(family, socket.SOCK_DGRAM) as sock:
                    sock.sendto(wire, address)
        except OSError as e:
            # Changes are still served at the next poll; say so once, not on every change.
            if not _warned:
                _warned = True
                log.warning("DNS NOTIFY to %s port %d failed (changes wait for run_dns's poll): %s", host, port, e)
