"""Where customers may point the platform: public addresses only, unless CERTHUB_ALLOW_PRIVATE_TARGETS.

Load balancer targets, CDN origins and webhooks make the platform's servers connect somewhere a
customer chose; a loopback, private or link-local address would reach the platform's own network.
"""

import ipaddress
import socket

from django.conf import settings

from certhub.errors import Invalid


def check_public(host: str, field: str) -> None:
    """Refuse `host` (an address or a name) unless every address it has is public."""
    reason = refusal(host)
    if reason:
        raise Invalid({field: [reason]})


def refusal(host: str) -> str:
    """Why the platform must not connect to `host`, or "" when it may."""
    if settings.CERTHUB_ALLOW_PRIVATE_TARGETS:
        return ""
    try:
        addresses = [ipaddress.ip_address(host)]
    except ValueError:
        try:
            addresses = [ipaddress.ip_address(info[4][0]) for info in socket.getaddrinfo(host, None)]
        except (OSError, UnicodeError, ValueError) as e:
            return f"{host} does not resolve ({e})"
    for address in addresses:
        if not address.is_global:
            return f"{host} is {address}, which is not a public address"
    return ""
