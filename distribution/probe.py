"""Probes: connect to a target as its clients do and report the certificate it serves."""

import socket
import ssl

from cryptography import x509


def tls_serial(host: str, port: int, server_name: str, *, timeout: float = 3.0) -> str:
    """The serial (lowercase hex, as versions store it) of the leaf served at host:port for SNI `server_name`.

    The chain is not verified here: the probe's question is which version is served, and custom
    certificates may chain to a private CA the platform does not hold.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection((host, port), timeout=timeout) as raw:
        with context.wrap_socket(raw, server_hostname=server_name) as tls:
            der = tls.getpeercert(binary_form=True)
    return der_serial(der)


def der_serial(der: bytes) -> str:
    return format(x509.load_der_x509_certificate(der).serial_number, "x")


def probe_name(dns_names: list[str]) -> str:
    """A name to send as SNI for a certificate: its first exact name, else one under its wildcard."""
    for name in dns_names:
        if not name.startswith("*."):
            return name
    return "probe." + dns_names[0][2:]
