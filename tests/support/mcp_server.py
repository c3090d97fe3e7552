"""A real MCP server (the ``mcp`` SDK's MCPServer, streamable HTTP, on loopback) that demands
a bearer token, for the end-to-end tests of ``keyhelper headers`` as Claude Code's
headersHelper.

Run as ``python mcp_server.py PORT TOKEN_FILE LOG_FILE``. Every request must carry
``Authorization: Bearer <the token file's content>`` (read anew per request, so a test
rotates the token by rewriting the file), else 401. Each request's method, whether the token
was right and the JSON-RPC method are appended to LOG_FILE as JSON lines. One tool, ``echo``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import uvicorn
from mcp.server.mcpserver import MCPServer
from starlette.types import ASGIApp, Receive, Scope, Send


def main(port: int, token_file: Path, log_file: Path) -> None:
    server = MCPServer("keyhelper-e2e")

    @server.tool()
    def echo(text: str) -> str:
        """Echo the text back."""
        return f"echo: {text}"

    app = server.streamable_http_app()
    uvicorn.run(BearerCheck(app, token_file, log_file), host="127.0.0.1", port=port,
                log_level="warning")


class BearerCheck:
    """ASGI middleware: 401 unless the bearer token is the token file's content."""

    def __init__(self, app: ASGIApp, token_file: Path, log_file: Path):
        self.app, self.token_file, self.log_file = app, token_file, log_file

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        expected = "Bearer " + self.token_file.read_text().strip()
        ok = headers.get("authorization") == expected
        body = b""
        more = True
        messages: list[Any] = []
        while more:  # read the body to log the JSON-RPC method, then replay it
            message = await receive()
            messages.append(message)
            body += message.get("body", b"")
            more = message.get("more_body", False)
        try:
            rpc = json.loads(body).get("method") if body else None
        except (ValueError, AttributeError):
            rpc = None
        with self.log_file.open("a") as log:
            log.write(json.dumps({"http": scope["method"], "ok": ok, "rpc": rpc,
                                  "tenant": headers.get("x-tenant")}) + "\n")
        if not ok:
            await send({"type": "http.response.start", "status": 401, "headers": [
                (b"content-type", b"application/json"),
                (b"www-authenticate", b'Bearer error="invalid_token"')]})
            await send({"type": "http.response.body",
                        "body": b'{"error": "invalid_token"}'})
            return

        async def replay() -> Any:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)


if __name__ == "__main__":
    main(int(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))
