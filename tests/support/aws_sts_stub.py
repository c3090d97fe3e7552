"""An STS that refuses every token, as AWS does for an unknown identity provider: moto
accepts any token, so the refusal cannot come from it (a stand-in for that one answer)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from typing import Any

from loopback import loopback_server

REFUSAL = (b'<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error>'
           b"<Type>Sender</Type><Code>InvalidIdentityToken</Code><Message>Couldn't retrieve "
           b"verification key from your identity provider</Message></Error><RequestId>r"
           b"</RequestId></ErrorResponse>")


class _Refuse(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(400)
        self.send_header("content-type", "text/xml")
        self.send_header("content-length", str(len(REFUSAL)))
        self.end_headers()
        self.wfile.write(REFUSAL)


@contextmanager
def sts_error_server() -> Iterator[str]:
    with loopback_server(_Refuse) as server:
        yield f"http://127.0.0.1:{server.server_address[1]}"
