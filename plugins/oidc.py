"""``oidc``: the person's own short-lived token from the company's OpenID provider.

``keyhelper login`` signs the person in once (authorization code with PKCE on a loopback
redirect, or the device flow); from then on each miss spends the refresh token for a new
access token (or ID token), under a lock, and keeps the rotated refresh token before the key
is printed. The get path never waits for a person: signed out, it fails at once with the
line that says what to run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from typing import Any, ClassVar

from keyhelper import redact
from keyhelper.backend import MISSING, Backend, Login, Option, Token, read_user_file
from keyhelper.errors import BackendError, ConfigError, Skip

from .oidc_flows import Client, Provider, Tokens, login_code, login_device
from .oidc_http import ProviderError
from .oidc_store import Session, SessionStore

log = logging.getLogger(__name__)

TOKENS = ("access_token", "id_token")
STORES = ("auto", "keyring", "file")
# A sign-in started from the get path (CLAUDE_HELPER_CONTEXT=interactive) leaves this much
# of the run's deadline for the token exchange.
EXCHANGE_SECONDS = 3.0


class OidcBackend(Backend):
    summary = "the person's own token from an OpenID provider (keyhelper login)"
    options: ClassVar = {
        "issuer": Option(str, required=True, help="the provider's issuer URL (discovery at "
                                                  "/.well-known/openid-configuration)"),
        "client_id": Option(str, required=True, help="the public client registered for "
                                                     "keyhelper"),
        "scopes": Option(str, "openid offline_access", help="space-separated scopes; "
                                                            "offline_access asks for a "
                                                            "refresh token"),
        "audience": Option(str, help="the audience parameter, for providers that need one"),
        "resource": Option(str, help="the resource indicator (RFC 8707) of the gateway"),
        "token": Option(str, "access_token", help="which token is the key", choices=TOKENS,
                        message='expected "access_token" or "id_token", got {value}'),
        "client_secret_file": Option(str, help="a confidential client's secret, in a "
                                               "private file"),
        "client_secret_backend": Option(str, help="a configured backend whose value is the "
                                                  "client secret"),
        "token_store": Option(str, "auto", choices=STORES,
                              help='where the refresh token lives: "keyring", "file", or '
                                   '"auto" (the keyring when usable, else the file)'),
        "token_dir": Option(str, help="the directory of the sign-in file (default: "
                                      "keyhelper's private state directory)"),
        "keyring_backend": Option(str, help="force one python-keyring backend"),
        "timeout": Option(float, 5.0, help="seconds for each call to the provider", min=0,
                          min_exclusive=True),
        "clock_skew": Option(float, 120.0, help="seconds of clock difference tolerated "
                                                "with the provider", min=0),
        "open_browser": Option(bool, False, help="signed out on the get path: start the "
                                                 "browser sign-in in a detached process, and "
                                                 "fail at once (a retry succeeds once signed "
                                                 "in)"),
        "login_timeout": Option(float, 300.0, help="seconds keyhelper login waits for the "
                                                   "person", min=1),
    }

    @classmethod
    def check_available(cls) -> None:
        pass  # the standard library and pyjwt, a dependency

    @classmethod
    def validate(cls, options: Mapping[str, Any], *, source: str, key: str) -> dict[str, Any]:
        result = super().validate(options, source=source, key=key)
        if result["client_secret_file"] and result["client_secret_backend"]:
            raise ConfigError("give client_secret_file or client_secret_backend, not both",
                              source=source, key=f"{key}.client_secret_backend")
        if result["token"] == "id_token" and "openid" not in result["scopes"].split():
            raise ConfigError('token = "id_token" needs the openid scope', source=source,
                              key=f"{key}.scopes")
        return result

    # --- parts --------------------------------------------------------------------------

    @property
    def issuer(self) -> str:
        return str(self.config["issuer"])

    def ident(self) -> str:
        parts = (self.issuer, self.config["client_id"], self.config["scopes"],
                 self.config["audience"] or "", self.config["resource"] or "")
        return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:32]

    def directory(self) -> str:
        if self.config["token_dir"]:
            directory = os.path.expanduser(str(self.config["token_dir"]))
            if not os.path.isabs(directory):  # relative: to whichever checkout we run in
                raise ConfigError("expected an absolute path (or one starting with ~)",
                                  key="token_dir")
            return directory
        return self.context.state_dir

    def store(self) -> SessionStore:
        return SessionStore(self.context, self.directory(), self.ident(),
                            self.config["token_store"], self.name,
                            self.config["keyring_backend"])

    def provider(self) -> Provider:
        directory = self.directory()
        prefix = os.path.join(directory, f"oidc-{self.ident()}") if directory else ""
        return Provider(Client(self.issuer, self.config["client_id"], self.config["scopes"],
                               self.config["audience"], self.config["resource"],
                               self._client_secret(), self.config["timeout"],
                               self.config["clock_skew"], prefix), self.context)

    def _client_secret(self) -> str | None:
        if self.config["client_secret_file"]:
            path = os.path.expanduser(self.config["client_secret_file"])
            data, why = read_user_file(path, "own")
            if data is None:
                raise BackendError(f"client_secret_file {path} "
                                   + ("does not exist" if why == MISSING else why))
            secret = data.decode("utf-8", "replace").strip()
        elif self.config["client_secret_backend"]:
            secret = str(self.context.fetch_other(self.config["client_secret_backend"]).value)
        else:
            return None
        redact.remember(secret)
        return secret

    def signed_out(self, store: SessionStore | None = None) -> Skip:
        """Not signed in here: a skip, as a missing ``vault login`` token is (the next
        backend may have a key; no failure is remembered, so a retry right after
        ``keyhelper login`` succeeds)."""
        if (store is not None and self.config["open_browser"]
                and start_detached(self, store)):
            return Skip(f"signed out of {self.issuer}: a browser window opened to sign in; "
                        "retry")
        where = f" --profile {self.context.profile}" if self.context.profile else ""
        return Skip(f"signed out of {self.issuer}: run keyhelper login{where}")

    # --- the key --------------------------------------------------------------------------

    def fetch(self) -> Token:
        store = self.store()
        provider = self.provider()
        with store.lock():  # one refresh grant at a time for this sign-in, whatever the cache
            session = store.read()
            if session is None:
                if self.context.env.get("CLAUDE_HELPER_CONTEXT") == "interactive":
                    return self._sign_in_now(store, provider)
                raise self.signed_out(store)
            try:
                tokens = provider.refresh(session.refresh_token)
            except ProviderError as exc:
                if exc.code == "invalid_grant":  # revoked or expired: it will never work
                    store.delete()
                    raise self.signed_out(store) from None
                raise
            # Keep the rotated refresh token before anything is printed: the old one is
            # spent, and the provider revokes the family if it is ever spent again.
            if tokens.refresh_token and tokens.refresh_token != session.refresh_token:
                kept = self._save(store, session, tokens)
                log.debug("oidc: refresh grant: refresh token rotated and kept in %s",
                          store.describe(kept))
            else:
                log.debug("oidc: refresh grant: the refresh token did not rotate")
        return self._token(tokens)

    def _sign_in_now(self, store: SessionStore, provider: Provider) -> Token:
        """CLAUDE_HELPER_CONTEXT=interactive (Claude Desktop): a person is there; sign in
        in the browser within the run's deadline."""
        seconds = self.context.remaining() - EXCHANGE_SECONDS
        if seconds <= 1:
            raise self.signed_out()
        tokens = login_code(provider, lambda line: log.warning("%s", line), True, seconds)
        self._save(store, None, tokens)
        return self._token(tokens)

    def _token(self, tokens: Tokens) -> Token:
        if self.config["token"] == "id_token":
            if not tokens.id_token:
                raise BackendError("the provider returned no ID token")
            return Token(tokens.id_token, tokens.id_expires_at, {"issuer": self.issuer})
        return Token(tokens.access_token, tokens.expires_at, {"issuer": self.issuer})

    def _save(self, store: SessionStore, old: Session | None, tokens: Tokens) -> Session:
        claims = tokens.claims
        if old is not None and not claims:
            subject, name, since = old.subject, old.name, old.signed_in
        else:
            subject = str(claims.get("sub", old.subject if old else ""))
            name = str(claims.get("email") or claims.get("preferred_username")
                       or claims.get("name") or subject)
            since = old.signed_in if old is not None else self.context.now()
        if not tokens.refresh_token:
            raise BackendError("the provider issued no refresh token (the scopes need "
                               "offline_access)")
        expires = tokens.refresh_expires_at or (old.refresh_expires if old else None)
        return store.write(Session(self.issuer, self.config["client_id"], subject,
                                   redact.printable(name, newlines=False)[:120], since,
                                   expires, "file", tokens.refresh_token),
                           old.store if old is not None else None)

    # --- sign-in hooks ----------------------------------------------------------------------

    def signs_in(self) -> bool:
        return True

    def login(self, request: Login) -> str:
        store = self.store()
        store.ensure_directory()  # before the person signs in, not after
        provider = self.provider()
        seconds = min(request.seconds, self.config["login_timeout"])
        if request.device:
            tokens = login_device(provider, request.say, seconds)
        else:
            tokens = login_code(provider, request.say, request.browser, seconds)
        with store.lock():
            session = self._save(store, None, tokens)
        return f"signed in to {self.issuer} as {session.name}"

    def logout(self) -> str | None:
        store = self.store()
        with store.lock():
            try:
                session = store.read()
            except (BackendError, Skip) as exc:
                log.warning("cannot read the refresh token to revoke it: %s", exc)
                session = None
            revoked = ""
            if session is not None:
                try:
                    if self.provider().revoke(session.refresh_token, "refresh_token"):
                        revoked = ", refresh token revoked"
                except BackendError as exc:
                    revoked = f", refresh token not revoked ({exc.message})"
            found = store.delete()
        if not found:
            return f"not signed in to {self.issuer}"
        return f"signed out of {self.issuer}{revoked}"

    def session_status(self) -> str | None:
        info = self.store().read_info()
        if info is None:
            return f"signed out of {self.issuer}"
        since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(info.signed_in))
        if info.refresh_expires is None:
            until = "until the provider ends the session"
        else:
            until = "until " + time.strftime("%Y-%m-%d %H:%M:%S UTC",
                                             time.gmtime(info.refresh_expires))
        return (f"signed in to {self.issuer} as {info.name} since {since}, {until} "
                f"(refresh token in {self.store().describe(info)})")


# --- the detached sign-in (open_browser) ---------------------------------------------------

def _pending(store: SessionStore) -> str:
    return store.path + ".pending"


def start_detached(backend: OidcBackend, store: SessionStore) -> bool:
    """Start the browser sign-in (keyhelper_plugins.oidc_login) in a detached process,
    unless one is under way; False when it could not be started."""
    if not store.path:
        return False
    marker = _pending(store)
    try:
        if time.time() - os.stat(marker).st_mtime < backend.config["login_timeout"] + 30:
            return True  # a sign-in is already waiting for the person
        os.unlink(marker)
    except FileNotFoundError:
        pass
    try:
        store.ensure_directory()
        os.close(os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        return True  # another process started it just now
    except (OSError, BackendError):
        return False
    job = {"name": backend.name, "options": backend.config, "profile": backend.context.profile,
           "state_dir": backend.context.state_dir, "marker": marker}
    try:
        child = subprocess.Popen([sys.executable, "-I", "-m", "keyhelper_plugins.oidc_login"],
                                 stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL, env=dict(backend.context.env),
                                 start_new_session=True, close_fds=True,
                                 cwd=os.path.abspath(os.sep))  # not the caller's checkout
        assert child.stdin is not None
        child.stdin.write(json.dumps(job).encode())
        child.stdin.close()
    except OSError:
        os.unlink(marker)
        return False
    return True
