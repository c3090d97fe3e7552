"""Loopback servers for the hooks' end-to-end tests (tests/e2e/test_hooks_e2e.py): the real
MCP server (mcp_server.py, a subprocess), and small HTTP receivers standing in for an
OpenTelemetry collector and for Bedrock (a fake only because neither can run here: they
record the headers Claude Code sends, which is all the tests check)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from fixtures_openbao import free_port
from loopback import loopback_server

SUPPORT = Path(__file__).resolve().parent


@dataclass
class McpServer:
    url: str
    token_file: Path
    log_file: Path

    def rotate(self, token: str) -> None:
        self.token_file.write_text(token)

    def log(self) -> list[dict[str, Any]]:
        if not self.log_file.exists():
            return []
        return [json.loads(line) for line in self.log_file.read_text().splitlines()]


@contextmanager
def mcp_server(directory: Path, token: str) -> Iterator[McpServer]:
    token_file, log_file = directory / "mcp-token", directory / "mcp-log.jsonl"
    token_file.write_text(token)
    port = free_port()
    out = (directory / "mcp-server.out").open("wb")
    proc = subprocess.Popen([sys.executable, str(SUPPORT / "mcp_server.py"), str(port),
                             str(token_file), str(log_file)], stdin=subprocess.DEVNULL,
                            stdout=out, stderr=out)
    try:
        give_up = time.monotonic() + 30
        while True:
            if proc.poll() is not None or time.monotonic() > give_up:
                raise AssertionError("the MCP server did not start: "
                                     + (directory / "mcp-server.out").read_text())
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.05)  # polling a server's readiness, not synchronising a test
        yield McpServer(f"http://127.0.0.1:{port}/mcp", token_file, log_file)
    finally:
        proc.terminate()
        proc.wait(10)
        out.close()


@dataclass
class Recorder:
    """Records the path and headers of every request; answers ``status`` with ``body``."""

    status: int = 200
    body: bytes = b"{}"
    seen: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def requests(self) -> list[tuple[str, dict[str, str]]]:
        with self.lock:
            return list(self.seen)


@contextmanager
def recorder(status: int = 200, body: bytes = b"{}") -> Iterator[Recorder]:
    rec = Recorder(status, body)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length") or 0))
            with rec.lock:
                rec.seen.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
            self.send_response(rec.status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(rec.body)))
            self.end_headers()
            self.wfile.write(rec.body)

    with loopback_server(Handler) as server:
        rec.port = server.server_address[1]
        yield rec
