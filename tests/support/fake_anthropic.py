"""A stand-in for an Anthropic-format gateway on loopback, for the Claude Code end-to-end tests.

A fake only because the real gateway here (LiteLLM's proxy) needs ~750 MB and 8 s to start
and a database for per-key rejection; scripts/e2e-litellm runs the same flow through it.
It answers POST /v1/messages (JSON, or SSE when the body asks for a stream), accepts only
the keys in ``valid_keys`` (401 for others, as a gateway does after a rotation) and records
the headers of every request.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Seen:
    path: str
    x_api_key: str | None
    authorization: str | None
    status: int


@dataclass
class Gateway:
    valid_keys: set[str] = field(default_factory=set)
    # When set, decides alone which keys are valid (a gateway checking a JWT, say).
    accept: Callable[[str], bool] | None = None
    requests: list[Seen] = field(default_factory=list)
    reply_text: str = "hi"
    lock: threading.Lock = field(default_factory=threading.Lock)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def messages(self) -> list[Seen]:
        with self.lock:
            return [r for r in self.requests if r.path.startswith("/v1/messages")]


def _sse(events: list[tuple[str, dict[str, Any]]]) -> bytes:
    return b"".join(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()
                    for name, data in events)


def _handler(gateway: Gateway) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("content-type", content_type)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_HEAD(self) -> None:
            self._send(200, b"", "text/plain")

        def do_GET(self) -> None:
            self._send(200, b"{}", "application/json")

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length) if length else b"{}"
            try:
                body = json.loads(raw or b"{}")
            except ValueError:
                body = {}
            key = self.headers.get("x-api-key")
            auth = self.headers.get("authorization")
            bearer = auth[len("Bearer "):] if auth and auth.startswith("Bearer ") else None
            known = (gateway.accept(key) if gateway.accept is not None and key
                     else key in gateway.valid_keys)
            ok = bool(key) and known and bearer == key
            path = self.path.split("?")[0]
            with gateway.lock:
                gateway.requests.append(Seen(path, key, auth, 200 if ok else 401))
            if not path.startswith("/v1/messages"):
                self._send(200, b"{}", "application/json")
                return
            if not ok:
                error = {"type": "error", "error": {"type": "authentication_error",
                                                    "message": "invalid x-api-key"}}
                self._send(401, json.dumps(error).encode(), "application/json")
                return
            if path.startswith("/v1/messages/count_tokens"):
                self._send(200, b'{"input_tokens": 5}', "application/json")
                return
            model = body.get("model", "claude-test")
            message = {"id": "msg_e2e", "type": "message", "role": "assistant", "model": model,
                       "content": [], "stop_reason": None, "stop_sequence": None,
                       "usage": {"input_tokens": 5, "output_tokens": 1}}
            if not body.get("stream"):
                message.update(content=[{"type": "text", "text": gateway.reply_text}],
                               stop_reason="end_turn")
                self._send(200, json.dumps(message).encode(), "application/json")
                return
            events = [
                ("message_start", {"type": "message_start", "message": message}),
                ("content_block_start", {"type": "content_block_start", "index": 0,
                                         "content_block": {"type": "text", "text": ""}}),
                ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                         "delta": {"type": "text_delta",
                                                   "text": gateway.reply_text}}),
                ("content_block_stop", {"type": "content_block_stop", "index": 0}),
                ("message_delta", {"type": "message_delta",
                                   "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                                   "usage": {"output_tokens": 1}}),
                ("message_stop", {"type": "message_stop"}),
            ]
            self._send(200, _sse(events), "text/event-stream")

    return Handler


@contextmanager
def serve_gateway(valid_keys: set[str] | None = None) -> Iterator[Gateway]:
    gateway = Gateway(set(valid_keys or ()))
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(gateway))
    server.daemon_threads = True
    gateway.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield gateway
    finally:
        server.shutdown()
        server.server_close()
