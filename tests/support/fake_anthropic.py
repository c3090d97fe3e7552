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
from http.server import BaseHTTPRequestHandler
from typing import Any

from loopback import loopback_server


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
    # A tool to call (name, input) when the request offers it: the model's first answer is
    # that tool_use; once the tool's result is in the conversation, the answer is the text
    # "tool said: <result>". ``before_tool_use`` runs just before that answer is sent.
    tool_use: tuple[str, dict[str, Any]] | None = None
    before_tool_use: Callable[[], None] | None = None
    tool_results: list[str] = field(default_factory=list)
    tools_offered: list[list[str]] = field(default_factory=list)  # per scripted request

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
            content = _tool_turn(gateway, body)
            if content is not None:
                self._send(200, _sse(_stream(body.get("model", "claude-test"), content)),
                           "text/event-stream")
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


def _tool_turn(gateway: Gateway, body: dict[str, Any]) -> dict[str, Any] | None:
    """The content block of a scripted tool turn (see Gateway.tool_use), or None."""
    if gateway.tool_use is None or not body.get("stream"):
        return None
    name, arguments = gateway.tool_use
    with gateway.lock:
        gateway.tools_offered.append([str(t.get("name")) for t in body.get("tools") or []])
    if not any(tool.get("name") == name for tool in body.get("tools") or []):
        return None
    last = (body.get("messages") or [{}])[-1]
    blocks = last.get("content") if isinstance(last.get("content"), list) else []
    for block in blocks:
        if block.get("type") == "tool_result":
            inner = block.get("content")
            text = inner if isinstance(inner, str) else "".join(
                part.get("text", "") for part in inner or [])
            with gateway.lock:
                gateway.tool_results.append(text)
            return {"type": "text", "text": f"tool said: {text}"}
    if gateway.before_tool_use is not None:
        gateway.before_tool_use()
    return {"type": "tool_use", "id": "toolu_e2e", "name": name, "input": arguments}


def _stream(model: str, block: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The SSE events of an answer with one content block (text or tool_use)."""
    message = {"id": "msg_e2e", "type": "message", "role": "assistant", "model": model,
               "content": [], "stop_reason": None, "stop_sequence": None,
               "usage": {"input_tokens": 5, "output_tokens": 1}}
    if block["type"] == "text":
        start, delta = {"type": "text", "text": ""}, {"type": "text_delta",
                                                      "text": block["text"]}
        stop = "end_turn"
    else:
        start = {**block, "input": {}}
        delta = {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}
        stop = "tool_use"
    return [
        ("message_start", {"type": "message_start", "message": message}),
        ("content_block_start", {"type": "content_block_start", "index": 0,
                                 "content_block": start}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta}),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("message_delta", {"type": "message_delta",
                           "delta": {"stop_reason": stop, "stop_sequence": None},
                           "usage": {"output_tokens": 1}}),
        ("message_stop", {"type": "message_stop"}),
    ]


@contextmanager
def serve_gateway(valid_keys: set[str] | None = None) -> Iterator[Gateway]:
    gateway = Gateway(set(valid_keys or ()))
    with loopback_server(_handler(gateway)) as server:
        gateway.port = server.server_address[1]
        yield gateway
