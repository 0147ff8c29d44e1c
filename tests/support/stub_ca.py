"""A plain-HTTP stand-in CA for what Pebble lacks or never does (refusals, odd answers, profiles)."""

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class StubCA:
    """A plain-HTTP stand-in for the parts of a CA that Pebble 2.4 lacks or never does.

    ``routes`` maps (method, path) to (status, headers, body); every answer carries a nonce.
    """

    def __init__(self) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.routes: dict[tuple[str, str], tuple[int, dict[str, str], bytes]] = {}
        self.requests: list[tuple[str, str]] = []
        self.payloads: dict[tuple[str, str], dict] = {}  # the last JWS payload POSTed to each route
        self.nonce = 0
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def route(
        self, method: str, path: str, status: int = 200, body: dict | bytes = b"", headers: dict[str, str] | None = None
    ) -> None:
        content_type = "application/problem+json" if status >= 400 else "application/json"
        if isinstance(body, dict):
            body = json.dumps(body).encode()
        self.routes[(method, path)] = (status, {"Content-Type": content_type, **(headers or {})}, body)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                stub.requests.append((self.command, self.path))
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.command == "POST" and body:
                    payload = json.loads(body).get("payload", "")
                    decoded = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)) if payload else b""
                    stub.payloads[(self.command, self.path)] = json.loads(decoded) if decoded else {}
                status, headers, body = stub.routes.get((self.command, self.path), (404, {}, b""))
                self.send_response(status)
                stub.nonce += 1
                self.send_header("Replay-Nonce", f"nonce{stub.nonce:011d}")  # 16 base64url characters
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_HEAD = do_POST = _answer

            def log_message(self, *args: object) -> None:
                pass

        return Handler

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
