"""A real OpenID provider (panva's oidc-provider, tests/support/oidc_provider.mjs, installed
by scripts/install-oidc-provider) on a free loopback port, and a person at its development
login form played over HTTP with a cookie jar.

``start_provider()`` is a plain context manager (usable outside pytest); the ``oidc``
fixture wraps it, one provider per test (~0.3 s to start). The provider appends each grant it
answers to an events file: :meth:`Provider.grants` counts them from the provider's side.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import pytest
from helpers import SCRIPT

ROOT = Path(__file__).resolve().parents[2]
PROVIDER_DIR = ROOT / ".deps" / "oidc-provider"
PROVIDER_JS = Path(__file__).resolve().parent / "oidc_provider.mjs"
CLIENT_ID = "keyhelper"
RESOURCE = "urn:keyhelper:gateway"
READY_WITHIN = 20.0


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Provider:
    issuer: str
    events: Path
    log: Path
    process: subprocess.Popen[bytes]

    def grants(self, grant_type: str | None = None, event: str = "grant.success") -> int:
        """How many grants the token endpoint answered (of ``grant_type``)."""
        count = 0
        if not self.events.exists():
            return 0
        for line in self.events.read_text().splitlines():
            item = json.loads(line)
            if item["event"] == event and grant_type in (None, item.get("grant_type")):
                count += 1
        return count

    def errors(self) -> list[str]:
        if not self.events.exists():
            return []
        return [json.loads(line).get("error", "") for line in
                self.events.read_text().splitlines() if '"grant.error"' in line]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def jwks(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.issuer + "/jwks", timeout=5) as response:
            return dict(json.load(response))


def node() -> str:
    found = shutil.which("node")
    if not found:
        raise RuntimeError("node not found (apt-get install nodejs)")
    return found


@contextlib.contextmanager
def start_provider(*, access_ttl: int = 3600, refresh_ttl: int = 86400,
                   vault_redirects: str | None = None,
                   port: int | None = None) -> Iterator[Provider]:
    if not (PROVIDER_DIR / "node_modules" / "oidc-provider").is_dir():
        raise RuntimeError("oidc-provider is not installed: run scripts/install-oidc-provider")
    work = Path(tempfile.mkdtemp(prefix="kh-oidc-"))
    port = port or free_port()
    env = {**os.environ, "OIDC_PROVIDER_DIR": str(PROVIDER_DIR), "PORT": str(port),
           "ACCESS_TTL": str(access_ttl), "REFRESH_TTL": str(refresh_ttl),
           "EVENTS_FILE": str(work / "events.jsonl"), "NODE_ENV": "test"}
    if vault_redirects:
        env["VAULT_REDIRECTS"] = vault_redirects
    log = work / "provider.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([node(), str(PROVIDER_JS)], stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, env=env, cwd=work)
    provider = Provider(f"http://127.0.0.1:{port}", work / "events.jsonl", log, process)
    try:
        deadline = time.monotonic() + READY_WITHIN
        while "ready " not in log.read_text():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"oidc-provider did not start: {log.read_text()[-2000:]}")
            time.sleep(0.05)
        yield provider
    finally:
        provider.stop()
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture
def oidc() -> Iterator[Provider]:
    with start_provider() as provider:
        yield provider


# --- a person at the login form -----------------------------------------------------------

class _Forms(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.forms: list[dict[str, Any]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.forms.append({"action": a.get("action", ""), "method":
                               a.get("method", "get").lower(), "fields": {}, "buttons": []})
        elif tag == "button" and self.forms:  # unnamed ones submit no field
            self.forms[-1]["buttons"].append((a.get("name", ""), a.get("value", "")))
        elif (tag == "input" and self.forms and a.get("name")
              and a.get("type") not in ("submit", "checkbox")):
            self.forms[-1]["fields"].setdefault(a["name"], a.get("value", ""))


def sign_in(url: str, user: str = "alice", *, user_code: str | None = None,
            deny: bool = False, max_steps: int = 12) -> str:
    """Play a person: open ``url``, fill each form (login, consent, device code), submit,
    until a page without a form. Returns the last page's URL (the loopback callback for
    the code flow)."""
    import requests

    session = requests.Session()
    response = session.get(url, timeout=10)
    for _ in range(max_steps):
        parser = _Forms()
        parser.feed(response.text)
        if not parser.forms:
            return str(response.url)
        form = parser.forms[0]
        fields = dict(form["fields"])
        if "login" in fields:
            fields["login"], fields["password"] = user, "any"
        if "user_code" in fields and user_code is not None:
            fields["user_code"] = user_code
        # Buttons are alternatives: the first (confirm), or "abort" to refuse.
        buttons = dict(form["buttons"])
        if deny and "abort" in buttons:
            fields["abort"] = buttons["abort"]
        elif form["buttons"] and form["buttons"][0][0]:
            name, value = form["buttons"][0]
            fields[name] = value
        target = urljoin(str(response.url), form["action"] or str(response.url))
        if form["method"] == "post":
            response = session.post(target, data=fields, timeout=10)
        else:
            response = session.get(target, params=fields, timeout=10)
    raise AssertionError(f"the sign-in did not finish in {max_steps} steps: {response.url}")


URL_LINE = re.compile(r"(http://127\.0\.0\.1:\d+/\S+)")


def wait_for_url(read: Any, pattern: re.Pattern[str] = URL_LINE, within: float = 20) -> str:
    """The first URL matching ``pattern`` in what ``read()`` returns (a growing stderr)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        match = pattern.search(read())
        if match:
            return match.group(1)
        time.sleep(0.05)
    raise AssertionError(f"no sign-in URL within {within} s: {read()!r}")


def host_of(url: str) -> str:
    return urlsplit(url).netloc


# --- `keyhelper login` in the background --------------------------------------------------

class Login:
    """`keyhelper login` running in the background; its stderr read as it grows."""

    def __init__(self, *args: str, env: dict[str, str] | None = None,
                 selection: tuple[str, ...] = ("--profile", "work")):
        self.proc = subprocess.Popen([SCRIPT, "login", *selection, *args],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True,
                                     env={**os.environ, **(env or {})})
        self.err = ""
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.err += line

    def finish(self, timeout: float = 30) -> tuple[int, str, str]:
        # stderr belongs to the reader thread; stdout is a line or two, read at the end.
        try:
            self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
        self._thread.join(5)
        assert self.proc.stdout is not None
        return self.proc.returncode, self.proc.stdout.read(), self.err


def login_code(user: str = "alice", selection: tuple[str, ...] = ("--profile", "work"),
               env: dict[str, str] | None = None) -> tuple[int, str, str]:
    login = Login("--no-browser", selection=selection, env=env)
    url = wait_for_url(lambda: login.err, re.compile(r"(http://127\.0\.0\.1:\d+/auth\?\S+)"))
    final = sign_in(url, user)
    assert re.match(r"http://127\.0\.0\.1:\d+/callback\?", final), final
    return login.finish()


def expire_cache_entry(cache: Path) -> None:
    """Make the one cache entry's access token past its cache life, as an hour later."""
    from keyhelper.base.files import write_private
    from keyhelper.base.records import parse_entry

    [path] = [p for p in cache.iterdir() if p.suffix == ".entry"]
    entry = parse_entry(path.read_bytes())
    assert entry is not None
    entry.expires = entry.refresh = time.time() - 1
    write_private(str(path), entry.serialize())
