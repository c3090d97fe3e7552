"""HTTP/1.1 on one socket: the little of it that keyhelper's Vault client uses.

Why not http.client: importing it costs 36-52 ms here (``python -X importtime``; A, a bare
``python -c pass``, is ~23 ms on the same machine), half of it ``email.parser`` for the
header parsing and 14-16 ms ``ssl``, which it imports even for an http:// address; this
module and ``socket`` cost ~7 ms. A cold Vault read is one process making one to three small
requests, so the import is most of its cost (issue 16: a cold read within ``bao kv get``).
What is kept of HTTP: requests with Content-Length, answers framed by Content-Length,
chunked encoding or the end of the connection, 1xx answers skipped, keep-alive unless the
server says otherwise; limits on line length, header count and body size.
"""

from __future__ import annotations

import socket

TYPE_CHECKING = False
if TYPE_CHECKING:
    import ssl
    from io import BufferedReader

MAX_LINE = 65536
MAX_HEADERS = 100


class RemoteDisconnected(ConnectionResetError):
    """The server closed the connection without answering (as http.client's)."""


class NotHttp(Exception):
    """An answer that does not parse as HTTP/1.x, or cut short; the text says which."""


class TooLarge(Exception):
    """An answer body longer than the limit asked for."""


class Wire:
    """One connection to one server; requests go one after the other."""

    def __init__(self, host: str, port: int, tls: ssl.SSLContext | None):
        self.host = host
        self.port = port
        self.tls = tls
        self.sock: socket.socket | None = None
        self.file: BufferedReader | None = None
        name = f"[{host}]" if ":" in host else host
        default = 443 if tls is not None else 80
        self.host_header = name if port == default else f"{name}:{port}"

    @property
    def connected(self) -> bool:
        return self.sock is not None

    def connect(self, timeout: float) -> None:
        """TCP, and for https the TLS handshake (SNI, certificate and host name checks by
        the context), within ``timeout`` each."""
        self.close()
        # An ASCII name as bytes: a str would load the idna codec (with unicodedata).
        host: str | bytes = self.host.encode() if self.host.isascii() else self.host
        sock = socket.create_connection((host, self.port), timeout)  # type: ignore[arg-type]
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.tls is not None:
                sock = self.tls.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise
        self.sock = sock
        self.file = sock.makefile("rb")

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
        if self.sock is not None:
            self.sock.close()
        self.sock = self.file = None

    def exchange(self, method: str, target: str, headers: dict[str, str], body: bytes | None,
                 timeout: float, limit: int) -> tuple[int, dict[str, str], bytes]:
        """Send one request and read its answer: (status, header fields with names in lower
        case, body). ``timeout`` bounds each socket operation. ValueError: a header that
        cannot be sent (a line break, not Latin-1)."""
        assert self.sock is not None and self.file is not None  # connected
        lines = [f"{method} {target} HTTP/1.1", f"Host: {self.host_header}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        if body is not None:
            lines.append(f"Content-Length: {len(body)}")
        if any("\r" in line or "\n" in line for line in lines):
            raise ValueError("a line break in the request head")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self.sock.settimeout(timeout)
        self.sock.sendall(head + body if body else head)
        status, version, fields = self._head()
        framed = True
        if method == "HEAD" or status in (204, 304):
            data = b""
        elif "chunked" in fields.get("transfer-encoding", "").lower():
            data = self._chunked(limit)
        elif "content-length" in fields:
            length = fields["content-length"]
            if not (length.isascii() and length.isdigit()):
                raise NotHttp("an answer that is not HTTP: a bad Content-Length")
            if int(length) > limit:
                raise TooLarge
            data = self._exactly(int(length))
        else:  # the end of the connection ends the body
            data = self.file.read(limit + 1)
            if len(data) > limit:
                raise TooLarge
            framed = False
        if not framed or version == "HTTP/1.0" or "close" in fields.get("connection",
                                                                       "").lower():
            self.close()
        return status, fields, data

    def _line(self) -> bytes:
        assert self.file is not None
        line = self.file.readline(MAX_LINE + 1)
        if len(line) > MAX_LINE:
            raise NotHttp("an answer that is not HTTP: a line too long")
        return line

    def _head(self) -> tuple[int, str, dict[str, str]]:
        while True:
            line = self._line()
            if not line:
                raise RemoteDisconnected("Remote end closed connection without response")
            version, _, rest = line.decode("latin-1").rstrip("\r\n").partition(" ")
            code = rest[:3]
            if not (version.startswith("HTTP/1.") and code.isascii() and code.isdigit()
                    and rest[3:4] in ("", " ")):
                raise NotHttp("an answer that is not HTTP")
            fields: dict[str, str] = {}
            for _ in range(MAX_HEADERS + 1):
                line = self._line()
                if line in (b"\r\n", b"\n"):
                    break
                if not line:
                    raise NotHttp("the answer was cut short")
                name, colon, value = line.decode("latin-1").partition(":")
                if not colon:
                    raise NotHttp("an answer that is not HTTP: a header line without a colon")
                fields[name.strip().lower()] = value.strip()
            else:
                raise NotHttp("an answer that is not HTTP: too many header lines")
            status = int(code)
            if 100 <= status < 200:
                continue  # informational (100 Continue, 103 Early Hints): the answer follows
            return status, version, fields

    def _exactly(self, length: int) -> bytes:
        assert self.file is not None
        data = self.file.read(length)
        if len(data) < length:
            raise NotHttp("the answer was cut short")
        return data

    def _chunked(self, limit: int) -> bytes:
        parts: list[bytes] = []
        size = 0
        while True:
            text = self._line().split(b";", 1)[0].strip()
            try:
                length = int(text, 16)
            except ValueError:
                raise NotHttp("an answer that is not HTTP: a bad chunk size") from None
            if length <= 0:
                if length < 0:
                    raise NotHttp("an answer that is not HTTP: a bad chunk size")
                break
            size += length
            if size > limit:
                raise TooLarge
            parts.append(self._exactly(length))
            self._line()  # the CRLF after the chunk
        while self._line() not in (b"\r\n", b"\n", b""):
            pass  # trailer fields: none are used
        return b"".join(parts)
