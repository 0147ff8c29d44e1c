"""Real nodes for delivery tests: started in a short temporary directory, registered as Nodes."""

import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from distribution.models import Node
from distribution.nodes.haproxy import HAProxyNode


@contextmanager
def haproxy_node(name: str = "lb-test") -> Iterator[tuple[HAProxyNode, Node]]:
    # Unix socket paths are limited to 107 bytes: keep the directory short.
    workdir = Path(tempfile.mkdtemp(prefix="ch-lb-", dir="/tmp"))
    process = HAProxyNode.start(workdir)
    node = Node.objects.create(name=name, kind=Node.Kind.HAPROXY, config={"workdir": str(workdir)})
    try:
        yield process, node
    finally:
        wait_idle(node)
        process.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def wait_idle(node: Node, timeout: float = 20) -> None:
    """Wait (bounded) until no delivery holds the node, so stopping it strands no worker mid-reload."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and Node.objects.filter(pk=node.pk, busy_until__isnull=False).exists():
        time.sleep(0.05)


class Backend:
    """A plain HTTP target that answers every GET with its name (keep-alive on)."""

    def __init__(self, host: str = "127.0.0.1", body: bytes = b"backend ok") -> None:
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.server.daemon_threads = True
        self.host, self.port = host, self.server.server_port
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
