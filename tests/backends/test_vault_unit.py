"""Unit tests of the vault backend's parts: retries and deadlines of the transport (against a
loopback stand-in, since a real OpenBao cannot be made to answer 500 or 429 on demand),
duration parsing, the login-token file format, lazy imports, cache keying."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from keyhelper_plugins.vault import VaultBackend
from keyhelper_plugins.vault_auth import LOGIN_FORMAT, Credential, LoginToken
from keyhelper_plugins.vault_http import (
    PATH_SAFE,
    QUERY_SAFE,
    Connection,
    VaultHttp,
    VaultStatus,
    escape,
    origin,
)
from keyhelper_plugins.vault_kv import duration

from keyhelper import redact
from keyhelper.backend import Context, dump_record
from keyhelper.errors import BackendError


class ScriptedVault:
    """A loopback HTTP/1.1 server answering from a list of (status, body), then 200; a body
    given as bytes is sent as it is. It counts calls and TCP connections, and with
    ``hang_up`` closes each connection after one answer, without saying so."""

    def __init__(self, answers: list[tuple[int, dict[str, Any] | bytes]],
                 hang_up: bool = False):
        self.answers = list(answers)
        self.calls = 0
        self.connections = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as Vault

            def setup(self) -> None:
                outer.connections += 1
                super().setup()

            def do_GET(self) -> None:
                outer.calls += 1
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, body = outer.answers.pop(0) if outer.answers else (
                    200, {"data": {"ok": True}})
                raw = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)
                self.close_connection = hang_up

            do_POST = do_GET

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        # A client that stops reading (an oversized answer) is expected: no traceback.
        self.server.handle_error = lambda request, client_address: None  # type: ignore[method-assign]
        self.addr = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def scripted() -> Iterator[type[ScriptedVault]]:
    made: list[ScriptedVault] = []

    def make(answers: list[tuple[int, dict[str, Any] | bytes]],
             hang_up: bool = False) -> ScriptedVault:
        made.append(ScriptedVault(answers, hang_up))
        return made[-1]

    yield make  # type: ignore[misc]
    for server in made:
        server.close()


def context(seconds: float = 5.0) -> Context:
    return Context(None, {}, time.monotonic() + seconds, "")


def http(addr: str, seconds: float = 5.0, retries: int = 2) -> VaultHttp:
    return VaultHttp(Connection(addr, retries=retries), context(seconds))


@pytest.mark.parametrize("status", [500, 502, 429])
def test_retries_on_5xx_and_429(scripted, status: int):
    server = scripted([(status, {"errors": ["busy"]}), (status, {"errors": ["busy"]})])

    body = http(server.addr).call("GET", "secret/x")

    assert body == {"data": {"ok": True}} and server.calls == 3


KV_UPGRADING = ("Waiting for the primary to upgrade from non-versioned to versioned data. This "
                "backend will be unavailable for a brief period and will resume service when "
                "the primary is finished.")


def test_retries_while_a_new_leaders_kv_mount_upgrades(scripted):
    """A KV v2 mount on a node that just became active answers 400 with this text for a
    moment (seen in tests/backends/test_vault_ha.py after a leader's death): another try,
    not a final error."""
    server = scripted([(400, {"errors": [KV_UPGRADING]})])

    body = http(server.addr).call("GET", "secret/x")

    assert body == {"data": {"ok": True}} and server.calls == 2


def test_gives_up_after_the_retries(scripted):
    server = scripted([(500, {"errors": ["boom"]})] * 5)

    with pytest.raises(VaultStatus) as caught:
        http(server.addr, retries=2).call("GET", "secret/x")

    assert caught.value.status == 500 and server.calls == 3
    assert caught.value.detail() == "boom"


@pytest.mark.parametrize(("status", "errors"), [(403, ["permission denied"]),
                                                (404, []), (503, ["Vault is sealed"]),
                                                (400, ["invalid request"])])
def test_no_retry_on_answers_that_will_not_change(scripted, status: int, errors: list[str]):
    server = scripted([(status, {"errors": errors})])

    with pytest.raises(VaultStatus):
        http(server.addr).call("GET", "secret/x")

    assert server.calls == 1


def test_retries_stop_at_the_deadline(scripted):
    server = scripted([(500, {"errors": ["boom"]})] * 50)

    started = time.monotonic()
    with pytest.raises(VaultStatus):
        http(server.addr, seconds=0.6, retries=50).call("GET", "secret/x")

    assert time.monotonic() - started < 0.6
    assert 1 <= server.calls < 10


def test_no_time_left_is_a_deadline_error():
    with pytest.raises(BackendError, match=re.escape("no time left to ask Vault at http://127.0.0.1:9")):
        http("http://127.0.0.1:9", seconds=0.2).call("GET", "secret/x")


def test_one_connection_serves_the_calls_of_a_run(scripted):
    server = scripted([])
    vault_http = http(server.addr)

    assert vault_http.call("POST", "auth/approle/login", json={"role_id": "r"}) == {
        "data": {"ok": True}}
    assert vault_http.call("GET", "secret/x", token="s.t") == {"data": {"ok": True}}
    vault_http.close()

    assert (server.calls, server.connections) == (2, 1)


def test_a_connection_the_server_closed_is_replaced_once(scripted):
    server = scripted([], hang_up=True)
    vault_http = http(server.addr, retries=0)

    for _ in range(3):
        assert vault_http.call("GET", "secret/x") == {"data": {"ok": True}}

    assert (server.calls, server.connections) == (3, 3)


def test_an_oversized_answer_is_not_read(scripted):
    big = b'{"data": {"api_key": "' + b"x" * (1 << 20) + b'"}}'
    server = scripted([(200, big)])

    with pytest.raises(BackendError) as caught:
        http(server.addr).call("GET", "secret/x")

    assert caught.value.message == (f"Vault at {server.addr} answered with more than 1 MiB; "
                                    "not read")
    assert server.calls == 1  # not retried: the same server would answer the same


@pytest.mark.parametrize(("status", "body", "message"), [
    (200, b"<html>proxy login</html>", "Vault answered 200 with a body that is not JSON"),
    (200, b"[" * 100_000, "Vault answered 200 with a body that is not JSON"),
])
def test_an_answer_that_is_not_a_json_object(scripted, status: int, body: bytes,
                                             message: str):
    server = scripted([(status, body)])

    with pytest.raises(BackendError) as caught:
        http(server.addr).call("GET", "secret/x")

    assert caught.value.message == message


def test_vault_error_text_is_scrubbed_of_known_secrets():
    redact.remember("s.secret-value-1234")
    exc = VaultStatus(400, ["invalid token s.secret-value-1234\n  given"])

    assert exc.detail() == f"invalid token <{redact.fingerprint('s.secret-value-1234')}> given"


@pytest.mark.parametrize(("value", "seconds"), [
    ("90", 90), (90, 90), ("15m", 900), ("1h30m", 5400), ("2d", 172800), ("1.5s", 1.5),
    (None, 0), ("", 0), ("soon", 0), ("10x", 0), (True, 0), ("5m3", 0),
])
def test_vault_durations(value: Any, seconds: float):
    assert duration(value) == seconds


def test_login_token_file_round_trip_and_repr():
    token = LoginToken("s.login-token", 1_800_000_000.5, 3600.0, True)

    assert LoginToken.parse(token.serialize()) == token
    assert "s.login-token" not in repr(token)
    assert "s.cred" not in repr(Credential("s.cred", "$VAULT_TOKEN"))
    no_token = [("expires", "-"), ("ttl", "0"), ("renewable", "0"), ("token", "")]
    assert LoginToken.parse(dump_record(LOGIN_FORMAT, no_token)) is None
    assert LoginToken.parse(b"something else\n") is None


def test_no_third_party_package_is_needed(monkeypatch: pytest.MonkeyPatch):
    """The transport is the standard library's: hvac (or requests) missing changes nothing."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name.split(".")[0] in (
                            "hvac", "requests", "urllib3") else real(name, *a))

    VaultBackend.check_available()


def test_watched_env_follows_the_auth_method():
    def watched(**options: Any) -> tuple[str, ...]:
        config = VaultBackend.validate({"path": "secret/x", **options}, source="t", key="k")
        return VaultBackend("v", config, context()).watched_env()

    assert watched() == ("VAULT_AGENT_ADDR", "VAULT_ADDR", "VAULT_NAMESPACE", "VAULT_CACERT",
                         "VAULT_TOKEN")
    assert watched(auth="approle", role_id="r", secret_id_env="CI_SECRET") == (
        "VAULT_AGENT_ADDR", "VAULT_ADDR", "VAULT_NAMESPACE", "VAULT_CACERT", "CI_SECRET")


def test_importing_the_plugin_imports_no_http_library():
    code = ("import sys, keyhelper_plugins.vault; "
            "print(sorted(m for m in ('hvac', 'requests', 'urllib3', 'http.client', 'ssl') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout

    assert out == "[]\n"


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:8200", "https://Vault.Example:8200/", "https://vault.example",
    "http://[::1]:8200/v1/x?y=1", "http://[::ffff:127.0.0.1]", "https://user:pw@host:1/p",
    "http://host:65535#frag", "http://host?q=1", "HTTPS://HOST:443/base/path",
    "http://[fe80::1%25eth0]:8200", "http://", "ftp://host", "http://host:", "host:8200",
    "http://host:99999", "http://host:12a",
])
def test_origin_agrees_with_urllib(url: str):
    """vault_http parses addresses itself (urllib.parse costs a cold read 3-8 ms)."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        port = parts.port
        scheme = parts.scheme.lower()
        expected = ((scheme, parts.hostname, port or {"http": 80, "https": 443}[scheme])
                    if scheme in ("http", "https") and parts.hostname else None)
    except ValueError:
        expected = None

    assert origin(url) == expected


def test_paths_and_queries_are_escaped_as_urllib_does():
    from urllib.parse import quote, urlencode

    path = "/v1/secret/data/team a/ключ/%41+x;y=z?#"
    params = {"version": "2", "code": "a b+c/d&e=f", "state": "ü"}

    assert escape(path, PATH_SAFE) == quote(path, safe="/!$&'()*+,;=:@%")
    assert "&".join(f"{escape(k, QUERY_SAFE)}={escape(v, QUERY_SAFE)}"
                    for k, v in params.items()) == urlencode(params, quote_via=quote, safe="")


class RawServer:
    """A loopback TCP server answering every request with the same bytes, then hanging up:
    for answers http.server does not write (chunked, unframed, not HTTP)."""

    def __init__(self, answer: bytes, first: tuple[bytes, ...] = ()):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.addr = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.requests: list[bytes] = []
        self.answer = answer
        self.first = list(first)  # answers before ``answer``, one per request
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"\r\n\r\n" not in data and (chunk := conn.recv(65536)):
                    data += chunk
                self.requests.append(data)
                conn.sendall(self.first.pop(0) if self.first else self.answer)


@pytest.mark.parametrize(("answer", "body"), [
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"7;ext=1\r\n{\"data\"\r\n9\r\n: {\"k\": 1\r\n2\r\n}}\r\n0\r\nX-Trailer: t\r\n\r\n",
     {"data": {"k": 1}}),
    (b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{\"data\": {\"eof\": true}}",
     {"data": {"eof": True}}),
    (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}", {}),
    (b"HTTP/1.1 204 No Content\r\n\r\n", {}),
])
def test_answers_framed_every_way_http_allows(answer: bytes, body: dict[str, Any]):
    server = RawServer(answer)

    assert http(server.addr).call("GET", "secret/x", token="s.t") == body
    head = server.requests[0].decode()
    assert head.startswith("GET /v1/secret/x HTTP/1.1\r\nHost: 127.0.0.1:")
    assert "\r\nX-Vault-Token: s.t\r\n" in head and "\r\nX-Vault-Request: true\r\n" in head


@pytest.mark.parametrize(("answer", "reason"), [
    (b"SSH-2.0-OpenSSH_9.6\r\n", "an answer that is not HTTP"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
     "an answer that is not HTTP: a bad chunk size"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{}", "the answer was cut short"),
    (b"", "it closed the connection without answering"),
])
def test_broken_answers_are_one_line(answer: bytes, reason: str):
    server = RawServer(answer)

    with pytest.raises(BackendError) as caught:
        http(server.addr, retries=0).call("GET", "secret/x")

    assert caught.value.message in (f"request to Vault at {server.addr} failed ({reason})",
                                    f"cannot connect to Vault at {server.addr} ({reason})")
    assert len(server.requests) == 1  # retries = 0


def test_a_header_with_a_line_break_is_not_sent(scripted):
    server = scripted([])

    with pytest.raises(BackendError) as caught:
        http(server.addr).call("GET", "secret/x", token="s.t\r\nX-Injected: 1")

    assert caught.value.message == (f"request to Vault at {server.addr} failed (a header that "
                                    "cannot be sent: check the token and namespace)")
    assert server.calls == 0


FUZZ_SERVER: list[RawServer] = []


@settings(max_examples=80, deadline=None)
@given(st.one_of(
    st.binary(max_size=200),
    st.builds(lambda status, head, body: b"HTTP/1.1 " + status + b"\r\n" + head + b"\r\n\r\n"
              + body, st.sampled_from([b"200 OK", b"404 x", b"307 x", b"100 x", b"204 x"]),
              st.binary(max_size=120), st.binary(max_size=120)),
    st.builds(lambda sizes, body: b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
              + sizes + b"\r\n" + body, st.binary(max_size=12), st.binary(max_size=60)),
))
def test_any_answer_is_a_body_or_a_one_line_error(answer: bytes):
    """vault_wire parses what a server sends by hand: whatever comes, the caller gets a
    JSON object, a VaultStatus or a BackendError, nothing else and no hang."""
    if not FUZZ_SERVER:
        FUZZ_SERVER.append(RawServer(b""))
    server = FUZZ_SERVER[0]
    server.answer = answer

    try:
        body = http(server.addr, seconds=3.0, retries=0).call("GET", "secret/x")
    except (VaultStatus, BackendError) as exc:
        assert "\n" not in str(exc)
    else:
        assert isinstance(body, dict)


def free_addr() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_a_redirect_to_a_dead_node_does_not_end_an_election():
    """A standby answers 307 to the dead leader for a second or two: the round is not "every
    node refused" (docs/reliability.md), so the call goes on until the standby serves."""
    dead = free_addr()
    standby = RawServer(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}", first=(
        f"HTTP/1.1 307 x\r\nLocation: {dead}/v1/secret/x\r\nContent-Length: 0\r\n\r\n"
        .encode(),))
    vault_http = VaultHttp(Connection(standby.addr, nodes=(standby.addr, dead)), context(5.0))

    assert vault_http.call("GET", "secret/x") == {}
    assert len(standby.requests) == 2


def test_a_redirect_elsewhere_passes_on_to_the_next_node(scripted):
    """Through proxies a standby's redirect names an address not listed: refused (the token
    would go there), and the next node is asked."""
    server = scripted([])
    elsewhere = RawServer(b"HTTP/1.1 307 x\r\nLocation: http://127.0.0.2:1/v1/secret/x\r\n"
                          b"Content-Length: 0\r\n\r\n")
    vault_http = VaultHttp(Connection(elsewhere.addr, nodes=(elsewhere.addr, server.addr)),
                           context(5.0))

    assert vault_http.call("GET", "secret/x") == {"data": {"ok": True}}
    assert (len(elsewhere.requests), server.calls) == (1, 1)
