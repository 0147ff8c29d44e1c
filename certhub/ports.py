"""Free loopback ports for the servers that tests, benchmarks and `make run` start."""

import socket


def free_port(host: str = "127.0.0.1") -> int:
    """A port free for both TCP and UDP on host right now (DNS servers need both)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    while True:
        with socket.socket(family, socket.SOCK_DGRAM) as udp:
            udp.bind((host, 0))
            port = udp.getsockname()[1]
            with socket.socket(family, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((host, port))
                except OSError:
                    continue
                return port
