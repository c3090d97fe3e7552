"""A static OIDC issuer on loopback: it serves a discovery document and a JWKS the test sets,
counts the requests for each path, and can be taken down (503). A stand-in only for what a
verifier fetches: two static JSON documents (the real OpenBao issuer is tested too, in
tests/gateway/test_openbao_tokens.py)."""

from __future__ import annotations

import contextlib
import http.server
import json
import ssl
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class StaticIssuer:
    url: str
    keys: list[dict[str, Any]] = field(default_factory=list)
    down: bool = False
    issuer: str | None = None  # what the discovery document says (default: url)
    hits: Counter[str] = field(default_factory=Counter)
    stall: threading.Event | None = None  # when set: each answer waits for it (30 s at most)

    @property
    def jwks_url(self) -> str:
        return f"{self.url}/jwks"

    def fetches(self) -> int:
        return self.hits["/jwks"]


@contextlib.contextmanager
def serve_issuer(tls: tuple[Path, Path] | None = None) -> Iterator[StaticIssuer]:
    """Serve on loopback; ``tls``: (certificate, key) PEM files to serve https with."""
    state = StaticIssuer("")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.hits[self.path] += 1
            if state.stall is not None:
                state.stall.wait(30)
            if state.down:
                body, status = b'{"error": "down"}', 503
            elif self.path == "/.well-known/openid-configuration":
                body = json.dumps({"issuer": state.issuer or state.url,
                                   "jwks_uri": state.jwks_url}).encode()
                status = 200
            elif self.path == "/jwks":
                body, status = json.dumps({"keys": state.keys}).encode(), 200
            else:
                body, status = b"{}", 404
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    if tls is not None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(*tls)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    scheme = "https" if tls else "http"
    state.url = f"{scheme}://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
