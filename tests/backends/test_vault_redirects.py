"""Redirects from Vault (issue 10, finding 5) and plain http:// addresses (finding 8).

A real OpenBao cannot be made to redirect where a test wants, so the redirecting "Vault" is a
stand-in: a stdlib http.server in a thread on 127.0.0.1, playing an attacker's server (or a
hostile proxy). The redirect target is another origin on loopback (127.0.0.2, or another port)
that records every request reaching it. Where a redirect must be followed, the chain ends at
the real OpenBao.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import ssl
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from certs import TestCA
from cryptography import x509
from fixtures_openbao import OpenBao
from helpers import Run, keyhelper
from keyhelper_plugins.vault_http import is_loopback

pytestmark = pytest.mark.vault

TOKEN = "hvs.the-users-vault-token"
SECRET_ID = "the-approle-secret-id"
STOLEN_KEY = {"data": {"data": {"api_key": "sk-planted-by-the-attacker"}},
              "auth": {"client_token": "hvs.attacker", "lease_duration": 3600}}


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]  # names in lower case
    body: bytes


Reply = tuple[int, dict[str, str], bytes]


@dataclass
class Stub:
    url: str
    seen: list[Seen] = field(default_factory=list)

    def calls(self) -> list[tuple[str, str]]:
        return [(s.method, s.path) for s in self.seen]


@contextlib.contextmanager
def serve(respond: Callable[[Seen], Reply], host: str = "127.0.0.1",
          tls: ssl.SSLContext | None = None) -> Iterator[Stub]:
    """A loopback HTTP(S) server in a thread, answering each request with ``respond``."""
    stub = Stub("")

    class Handler(BaseHTTPRequestHandler):
        def handle_one(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            seen = Seen(self.command, self.path, {k.lower(): v for k, v in self.headers.items()},
                        self.rfile.read(length))
            stub.seen.append(seen)
            status, headers, body = respond(seen)
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = do_LIST = handle_one

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer((host, 0), Handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    stub.url = f"{'https' if tls else 'http'}://{host}:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield stub
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def recorder(_: Seen) -> Reply:
    """The attacker's collector: answers as Vault would, with a key of its choosing."""
    return 200, {"Content-Type": "application/json"}, json.dumps(STOLEN_KEY).encode()


def redirect_to(target: str, status: int = 307) -> Callable[[Seen], Reply]:
    """Every request sent on to ``target``, path and query kept (as an HA standby does)."""
    return lambda seen: (status, {"Location": f"{target}{seen.path}"}, b"")


def vault_failed(reason: str) -> str:
    return f"keyhelper: no key from vault\n  vault failed: {reason}\n"


def kv_config(addr_line: str = "", extra: str = "") -> str:
    # mount and kv_version given: the KV read is the first request.
    return (f'chain = ["vault"]\n[backends.vault]\npath = "x"\nmount = "secret"\n'
            f'kv_version = 2\n{addr_line}\n{extra}\n')


def get(addr: str, **env: str) -> Run:
    return keyhelper("--no-cache", env={"VAULT_ADDR": addr, **env})


# --- another origin: nothing sent there ------------------------------------------------------

def test_cross_origin_redirect_of_a_kv_read(write_config):
    write_config(kv_config())
    with serve(recorder, host="127.0.0.2") as thief, serve(redirect_to(thief.url)) as vault:
        result = get(vault.url, VAULT_TOKEN=TOKEN)

    assert thief.seen == []
    assert vault.calls() == [("GET", "/v1/secret/data/x")]  # once: no retry either
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == vault_failed(
        f"Vault at {vault.url} redirected to {thief.url} (another origin); not followed: "
        "the token would go there")


def test_cross_origin_redirect_on_another_port_of_an_approle_login(write_config):
    write_config('chain = ["vault"]\n[backends.vault]\npath = "secret/x"\nauth = "approle"\n'
                 'role_id = "role-1"\nsecret_id_env = "CI_SECRET_ID"\n')
    with serve(recorder) as thief, serve(redirect_to(thief.url, 308)) as vault:
        result = get(vault.url, CI_SECRET_ID=SECRET_ID)

    assert thief.seen == []
    assert vault.calls() == [("POST", "/v1/auth/approle/login")]
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == vault_failed(
        f"Vault at {vault.url} redirected to {thief.url} (another origin); not followed: "
        "the login credentials would go there")


def test_https_to_http_downgrade(write_config, tmp_path: Path):
    ca_cert, server_tls = tls_files(tmp_path)
    write_config(kv_config(extra=f'ca_cert = "{ca_cert}"'))
    with (serve(recorder) as thief,
          serve(redirect_to(thief.url), tls=server_tls) as vault):
        result = get(vault.url, VAULT_TOKEN=TOKEN)

    assert thief.seen == []
    assert vault.calls() == [("GET", "/v1/secret/data/x")]
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == vault_failed(
        f"Vault at {vault.url} redirected to {thief.url} (a downgrade to plain http); not "
        "followed: the token would go there")


def test_redirect_target_path_and_query_are_not_shown(write_config):
    """The Location may carry secrets of its own: only scheme://host:port is shown."""
    write_config(kv_config())
    with (serve(recorder, host="127.0.0.2") as thief,
          serve(lambda _: (302, {"Location": f"{thief.url}/p-secret?q=secret"}, b"")) as vault):
        result = get(vault.url, VAULT_TOKEN=TOKEN)

    assert thief.seen == []
    assert result.stderr == vault_failed(
        f"Vault at {vault.url} redirected to {thief.url} (another origin); not followed: "
        "the token would go there")


# --- the same origin: followed, a few hops, with the method and body HTTP gives --------------

def same_origin_proxy(openbao: OpenBao | None, statuses: tuple[int, ...]
                      ) -> Callable[[Seen], Reply]:
    """Redirects /v1/... to /hop1/v1/... (relative Location), and so on, once per status in
    ``statuses``; the last hop is passed on to the real OpenBao."""
    def respond(seen: Seen) -> Reply:
        hop = int(seen.path[4:].split("/")[0]) if seen.path.startswith("/hop") else 0
        inner = seen.path.split("/", 2)[2] if hop else seen.path[1:]
        if hop < len(statuses):
            return statuses[hop], {"Location": f"/hop{hop + 1}/{inner}"}, b""
        assert openbao is not None
        return forward(openbao, seen, f"/{inner}")
    return respond


def forward(openbao: OpenBao, seen: Seen, path: str) -> Reply:
    headers = {k: v for k, v in seen.headers.items()
               if k.startswith("x-vault-") or k == "content-type"}
    request = urllib.request.Request(f"{openbao.addr}{path}", data=seen.body or None,
                                     method=seen.method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, {"Content-Type": "application/json"}, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, {"Content-Type": "application/json"}, exc.read()


def test_same_origin_redirects_reach_openbao(openbao: OpenBao, write_config):
    name = openbao.unique()
    openbao.kv_put(name, {"api_key": "sk-behind-redirects"})
    write_config(f'chain = ["vault"]\n[backends.vault]\npath = "secret/{name}"\n')
    with serve(same_origin_proxy(openbao, (301, 302, 303))) as vault:
        result = get(vault.url, VAULT_TOKEN="root")

    assert (result.returncode, result.stdout, result.stderr) == (0, "sk-behind-redirects\n", "")
    mounts, read = f"sys/internal/ui/mounts/secret/{name}", f"secret/data/{name}"
    assert vault.calls() == [("GET", f"{prefix}/v1/{path}") for path in (mounts, read)
                             for prefix in ("", "/hop1", "/hop2", "/hop3")]
    assert all(s.headers["x-vault-token"] == "root" for s in vault.seen)  # same origin


def test_same_origin_307_and_308_keep_the_login_body(openbao: OpenBao, write_config):
    name = openbao.unique()
    openbao.kv_put(name, {"api_key": "sk-approle-redirected"})
    policy = f"read-{name}"
    openbao.policy(policy, f'path "secret/data/{name}" {{ capabilities = ["read"] }}\n'
                           f'path "secret/metadata/{name}" {{ capabilities = ["list"] }}')
    openbao.enable_auth("approle")
    openbao.api("POST", f"auth/approle/role/{name}", {"token_policies": [policy]})
    role_id = openbao.api("GET", f"auth/approle/role/{name}/role-id")["data"]["role_id"]
    secret_id = openbao.api("POST", f"auth/approle/role/{name}/secret-id")["data"]["secret_id"]
    write_config(f'chain = ["vault"]\n[backends.vault]\npath = "{name}"\n'
                 f'mount = "secret"\nkv_version = 2\nauth = "approle"\nrole_id = "{role_id}"\n'
                 'secret_id_env = "CI_SECRET_ID"\n')
    with serve(same_origin_proxy(openbao, (307, 308))) as vault:
        result = get(vault.url, CI_SECRET_ID=secret_id)

    assert (result.returncode, result.stdout, result.stderr) == (
        0, "sk-approle-redirected\n", "")
    logins = [s for s in vault.seen if s.path.endswith("/v1/auth/approle/login")]
    assert [(s.method, s.path) for s in logins] == [
        ("POST", "/v1/auth/approle/login"), ("POST", "/hop1/v1/auth/approle/login"),
        ("POST", "/hop2/v1/auth/approle/login")]
    assert all(json.loads(s.body) == {"role_id": role_id, "secret_id": secret_id}
               for s in logins)


def test_303_turns_a_login_into_a_get_without_its_body(openbao: OpenBao, write_config):
    openbao.enable_auth("approle")
    write_config('chain = ["vault"]\n[backends.vault]\npath = "secret/x"\nauth = "approle"\n'
                 'role_id = "role-1"\nsecret_id_env = "CI_SECRET_ID"\nretries = 0\n')
    with serve(same_origin_proxy(openbao, (303,))) as vault:
        result = get(vault.url, CI_SECRET_ID=SECRET_ID)

    sent = json.dumps({"role_id": "role-1", "secret_id": SECRET_ID}).encode()
    assert [(s.method, s.path, s.body) for s in vault.seen] == [
        ("POST", "/v1/auth/approle/login", sent), ("GET", "/hop1/v1/auth/approle/login", b"")]
    assert (result.returncode, result.stdout) == (1, "")
    # OpenBao's own answer to the bodiless GET.
    assert result.stderr == vault_failed("approle login at auth/approle refused: missing role_id")


def test_more_than_three_redirects_are_not_followed(write_config):
    write_config(kv_config())
    with serve(same_origin_proxy(None, (307, 307, 307, 307))) as vault:
        result = get(vault.url, VAULT_TOKEN=TOKEN)

    assert vault.calls() == [("GET", f"{prefix}/v1/secret/data/x")
                             for prefix in ("", "/hop1", "/hop2", "/hop3")]
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == vault_failed(
        f"Vault at {vault.url} redirected more than 3 times; not followed further")


# --- plain http:// addresses -------------------------------------------------------------------

def test_plain_http_to_another_host_warns(write_config):
    # No token anywhere, so the run stops before any request: nothing leaves the machine
    # (tests may not reach non-loopback addresses), yet the address has been judged.
    write_config('chain = ["vault"]\n[backends.vault]\npath = "secret/x"\n')

    result = get("http://vault.example:8200")

    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == (
        "keyhelper: vault backend vault: http://vault.example:8200 is plain http: the Vault "
        "token and the key travel unencrypted; use https\n"
        "keyhelper: no key from vault\n  vault skipped: no Vault token: $VAULT_TOKEN is not "
        "set, no token_file option, no ~/.vault-token (run: vault login)\n")


def test_plain_http_on_loopback_is_quiet(openbao: OpenBao, write_config):
    name = openbao.unique()
    openbao.kv_put(name, {"api_key": "sk-loopback"})
    write_config(f'chain = ["vault"]\n[backends.vault]\npath = "secret/{name}"\n')
    port = openbao.addr.rsplit(":", 1)[1]

    by_ip = get(openbao.addr, VAULT_TOKEN="root")
    by_name = get(f"http://localhost:{port}", VAULT_TOKEN="root")
    ipv6 = get(f"http://[::1]:{port}")  # no token: judged, not contacted

    assert (by_ip.returncode, by_ip.stdout, by_ip.stderr) == (0, "sk-loopback\n", "")
    assert (by_name.returncode, by_name.stdout, by_name.stderr) == (0, "sk-loopback\n", "")
    assert ipv6.stderr == ("keyhelper: no key from vault\n  vault skipped: no Vault token: "
                           "$VAULT_TOKEN is not set, no token_file option, no ~/.vault-token "
                           "(run: vault login)\n")


@pytest.mark.parametrize(("addr", "loopback"), [
    ("http://127.0.0.1:8200", True), ("http://127.9.8.7", True), ("http://[::1]:8200", True),
    ("http://localhost:8200", True), ("http://LocalHost.:8200", True),
    ("http://[::ffff:127.0.0.1]:8200", True), ("http://vault.example:8200", False),
    ("http://localhost.example", False), ("http://127.0.0.1.nip.io", False),
    ("http://10.0.0.1", False), ("http://0.0.0.0", False), ("http://[::]", False),
    ("http://[fe80::1%25eth0]", False), ("http://", False),
])
def test_which_addresses_are_loopback(addr: str, loopback: bool):
    assert is_loopback(addr) is loopback


# --- helpers -----------------------------------------------------------------------------------

def tls_files(directory: Path) -> tuple[Path, ssl.SSLContext]:
    """A CA (PEM file, for ca_cert) and a server context with a certificate it signed for
    127.0.0.1."""
    ca = TestCA("keyhelper redirect test CA")
    ca_path, cert_path, key_path = (directory / n for n in ("ca.pem", "server.pem", "key.pem"))
    ca_path.write_bytes(ca.pem)
    ca.issue("127.0.0.1", x509.SubjectAlternativeName(
        [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), cert_path, key_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    return ca_path, context
