"""The OAuth 2.0 / OpenID Connect exchanges of the oidc backend: discovery, the refresh grant,
the authorization code flow with PKCE and a loopback redirect (RFC 7636, RFC 8252), the
device authorization grant (RFC 8628), revocation (RFC 7009), and the ID token's checks
(signature against the provider's JWKS, ``iss``, ``aud``, ``nonce``, with leeway for clock
skew). pyjwt checks the signatures; the requests are plain urllib (oidc_http).
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import logging
import secrets
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

from keyhelper import redact
from keyhelper.backend import Context, read_state_file, write_state_file
from keyhelper.errors import BackendError

from .oidc_http import ProviderError, call, check_url, oauth_error, same_origin

log = logging.getLogger(__name__)

DISCOVERY_LIFE = 3600.0  # seconds a discovery document or JWKS is reused from the state dir
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
ID_TOKEN_ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256",
                       "ES384", "ES512", "EdDSA"]


@dataclass(frozen=True)
class Client:
    """What the backend's options say about the provider and this client."""

    issuer: str
    client_id: str
    scopes: str
    audience: str | None
    resource: str | None
    client_secret: str | None
    timeout: float
    leeway: float
    state_file: str  # prefix for the cached discovery document and JWKS ("" for none)


@dataclass(frozen=True)
class Tokens:
    """A token endpoint's answer, checked. ``repr`` shows no token."""

    access_token: str = field(repr=False)
    expires_at: float | None
    refresh_token: str | None = field(repr=False)
    id_token: str | None = field(repr=False)
    id_expires_at: float | None
    claims: Mapping[str, Any] = field(default_factory=dict, repr=False)
    refresh_expires_at: float | None = None


class Provider:
    """One issuer, for one run: its discovery document and keys fetched on first use."""

    def __init__(self, client: Client, context: Context):
        self.client = client
        self.context = context
        self._meta: dict[str, Any] | None = None
        self._jwks: dict[str, Any] | None = None

    # --- discovery and keys -----------------------------------------------------------------

    def meta(self) -> dict[str, Any]:
        if self._meta is None:
            self._meta = self._cached("discovery", self._discover)
        return self._meta

    def endpoint(self, name: str, required: bool = True) -> str | None:
        url = self.meta().get(name)
        if not isinstance(url, str) or not url:
            if required:
                raise BackendError(f"the provider {self.client.issuer} has no {name}")
            return None
        return same_origin(url, self.client.issuer, name)

    def _discover(self) -> dict[str, Any]:
        issuer = self.client.issuer.rstrip("/")
        url = check_url(issuer + "/.well-known/openid-configuration", "issuer")
        status, meta = call(self.context, "GET", url, timeout=self.client.timeout,
                            what=f"discovery at {issuer}")
        if status != 200:
            raise BackendError(f"discovery at {issuer}: HTTP {status}")
        if meta.get("issuer") != self.client.issuer:
            raise BackendError(f"discovery at {issuer} names another issuer "
                               f"({redact.printable(str(meta.get('issuer')))[:120]}); refused")
        return meta

    def _cached(self, kind: str, load: Callable[[], dict[str, Any]],
                refresh: bool = False) -> dict[str, Any]:
        path = f"{self.client.state_file}.{kind}" if self.client.state_file else ""
        if path and not refresh:
            data = read_state_file(path)
            if data is not None:
                try:
                    saved = json.loads(data)
                    if (isinstance(saved, dict) and saved.get("issuer") == self.client.issuer
                            and 0 <= self.context.now() - float(saved["at"]) < DISCOVERY_LIFE):
                        return dict(saved["doc"])
                except (ValueError, KeyError, TypeError):
                    pass
        doc = load()
        if path:
            try:
                write_state_file(path, json.dumps({"issuer": self.client.issuer,
                                                   "at": self.context.now(),
                                                   "doc": doc}).encode())
            except OSError as exc:
                log.debug("oidc: cannot keep the %s in %s (%s)", kind, path, exc)
        return doc

    def _keys(self, refresh: bool) -> dict[str, Any]:
        def load() -> dict[str, Any]:
            url = self.endpoint("jwks_uri")
            assert url is not None
            status, jwks = call(self.context, "GET", url, timeout=self.client.timeout,
                                what="the provider's JWKS")
            if status != 200 or not isinstance(jwks.get("keys"), list):
                raise BackendError("the provider's JWKS has no keys")
            return jwks

        if self._jwks is None or refresh:
            self._jwks = self._cached("jwks", load, refresh)
        return self._jwks

    # --- the ID token -------------------------------------------------------------------------

    def verify_id_token(self, token: str, nonce: str | None) -> dict[str, Any]:
        """The ID token's claims, once its signature, issuer, audience, expiry and nonce
        check out. Refetches the JWKS once for an unknown key id (key rotation)."""
        import jwt

        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise BackendError("the provider's ID token is not a JWT") from None
        kid = header.get("kid")
        key = self._find_key(kid, refresh=False) or self._find_key(kid, refresh=True)
        if key is None:
            raise BackendError("the ID token is signed with a key the provider does not "
                               "publish; refused")
        try:
            claims: dict[str, Any] = jwt.decode(
                token, key=key, algorithms=ID_TOKEN_ALGORITHMS, audience=self.client.client_id,
                issuer=self.client.issuer, leeway=self.client.leeway,
                options={"require": ["iss", "aud", "exp", "iat", "sub"]})
        except jwt.InvalidSignatureError:
            raise BackendError("the ID token's signature does not match the provider's "
                               "key; refused") from None
        except jwt.InvalidAudienceError:
            raise BackendError("the ID token is for another client (aud); refused") from None
        except jwt.InvalidIssuerError:
            raise BackendError("the ID token is from another issuer (iss); refused") from None
        except jwt.PyJWTError as exc:
            raise BackendError(f"the ID token was refused: {exc}") from None
        if nonce is not None and not secrets.compare_digest(str(claims.get("nonce", "")),
                                                            nonce):
            raise BackendError("the ID token's nonce does not match this login; refused")
        return claims

    def _find_key(self, kid: object, refresh: bool) -> Any:
        import jwt

        for jwk in self._keys(refresh).get("keys", []):
            if not isinstance(jwk, dict) or jwk.get("use", "sig") != "sig":
                continue
            if kid is None or jwk.get("kid") == kid:
                try:
                    return jwt.PyJWK.from_dict(jwk)
                except jwt.PyJWTError:
                    continue
        return None

    # --- grants ---------------------------------------------------------------------------

    def _client_auth(self, form: dict[str, str]) -> dict[str, str]:
        form["client_id"] = self.client.client_id
        if self.client.client_secret:
            form["client_secret"] = self.client.client_secret
        return form

    def token_request(self, form: dict[str, str], what: str, nonce: str | None = None,
                      retries: int = 1) -> Tokens:
        url = self.endpoint("token_endpoint")
        assert url is not None
        status, body = call(self.context, "POST", url, form=self._client_auth(form),
                            timeout=self.client.timeout, what=what, retries=retries)
        if status != 200:
            raise oauth_error(status, body, what)
        return self._tokens(body, nonce)

    def _tokens(self, body: Mapping[str, Any], nonce: str | None) -> Tokens:
        now = self.context.now()
        access = body.get("access_token")
        if not isinstance(access, str) or not access:
            raise BackendError("the token endpoint returned no access token")
        redact.remember(access)
        refresh = body.get("refresh_token")
        refresh = refresh if isinstance(refresh, str) and refresh else None
        if refresh:
            redact.remember(refresh)
        id_token = body.get("id_token")
        id_token = id_token if isinstance(id_token, str) and id_token else None
        claims: dict[str, Any] = {}
        id_expires = None
        if id_token:
            redact.remember(id_token)
            claims = self.verify_id_token(id_token, nonce)
            # The provider's clock may differ from ours: keep the token's lifetime, not its
            # absolute expiry.
            life = float(claims["exp"]) - float(claims.get("iat", claims["exp"]))
            id_expires = now + life if life > 0 else None
        elif nonce is not None:
            raise BackendError("the provider returned no ID token (is the scope openid?)")
        expires_in = _number(body.get("expires_in"))
        refresh_in = _number(body.get("refresh_expires_in")) or _number(
            body.get("refresh_token_expires_in"))
        return Tokens(access, now + expires_in if expires_in else None, refresh, id_token,
                      id_expires, claims, now + refresh_in if refresh_in else None)

    def refresh(self, refresh_token: str) -> Tokens:
        """The refresh grant. Not retried: a lost answer may have rotated the token already."""
        form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
        if self.client.resource:
            form["resource"] = self.client.resource
        return self.token_request(form, "refresh at the token endpoint", retries=0)

    def revoke(self, token: str, hint: str) -> bool:
        """RFC 7009; False when the provider offers no revocation endpoint."""
        url = self.endpoint("revocation_endpoint", required=False)
        if url is None:
            return False
        status, body = call(self.context, "POST", url, form=self._client_auth(
            {"token": token, "token_type_hint": hint}), timeout=self.client.timeout,
            what="revocation")
        if status != 200:
            raise oauth_error(status, body, "revocation")
        return True

    def authorize_params(self, extra: dict[str, str]) -> dict[str, str]:
        params = {"client_id": self.client.client_id, "scope": self.client.scopes}
        if "offline_access" in self.client.scopes.split():
            params["prompt"] = "consent"  # what providers require to issue a refresh token
        if self.client.resource:
            params["resource"] = self.client.resource
        if self.client.audience:
            params["audience"] = self.client.audience
        params.update(extra)
        return params


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if 0 < number < 10 * 365 * 86400 else None


# --- the authorization code flow with PKCE ----------------------------------------------------

Say = Callable[[str], None]


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(64)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    return verifier, challenge.rstrip(b"=").decode()


class _Callback(BaseHTTPRequestHandler):
    """Answers the browser's redirect to the loopback address; hands over the query."""

    server: _CallbackServer

    def do_GET(self) -> None:
        parts = urllib.parse.urlsplit(self.path)
        if parts.path != self.server.callback_path:
            self.send_error(404)
            return
        query = dict(urllib.parse.parse_qsl(parts.query))
        ok = "code" in query and "error" not in query
        text = ("Signed in to keyhelper. You can close this window." if ok else
                "keyhelper could not sign you in: " + query.get("error", "no code"))
        body = f"<!doctype html><title>keyhelper</title><p>{html.escape(text)}</p>".encode()
        self.send_response(200 if ok else 400)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        if secrets.compare_digest(query.get("state", ""), self.server.state):
            self.server.result = query
            self.server.done.set()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the query holds the code: never logged


class _CallbackServer(HTTPServer):
    def __init__(self, port: int, callback_path: str, state: str):
        super().__init__(("127.0.0.1", port), _Callback)
        self.callback_path = callback_path
        self.state = state
        self.result: dict[str, str] | None = None
        self.done = threading.Event()


def wait_for_redirect(port: int, path: str, state: str, url_for: Callable[[str], str],
                      open_url: Callable[[str], None], seconds: float) -> dict[str, str]:
    """Listen on 127.0.0.1:``port`` (0: any free port), hand the authorization URL to
    ``open_url``, and return the redirect's query once one with ``state`` arrives."""
    try:
        server = _CallbackServer(port, path, state)
    except OSError as exc:
        raise BackendError(f"cannot listen on 127.0.0.1:{port} for the sign-in redirect "
                           f"({exc.strerror or exc})") from None
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                              name="keyhelper-callback", daemon=True)
    thread.start()
    try:
        redirect_uri = f"http://127.0.0.1:{server.server_address[1]}{path}"
        open_url(url_for(redirect_uri))
        if not server.done.wait(seconds):
            raise BackendError(f"no sign-in within {seconds:.0f} s")
        assert server.result is not None
        result = dict(server.result, redirect_uri=redirect_uri)
    finally:
        server.shutdown()
        server.server_close()
    if "error" in result:
        raise BackendError("the provider refused the sign-in: "
                           + redact.printable(result["error"], newlines=False)[:80])
    if not secrets.compare_digest(result.get("state", ""), state):
        raise BackendError("the sign-in redirect carries another state; refused")
    return result


def browser_opener(browser: bool, say: Say) -> Callable[[str], None]:
    def open_url(url: str) -> None:
        if browser:
            import webbrowser  # honours $BROWSER

            if webbrowser.open(url):
                say("A browser window opened to sign in. If none did, open this URL:")
                say(url)
                return
        say("Open this URL in a browser to sign in:")
        say(url)

    return open_url


def login_code(provider: Provider, say: Say, browser: bool, seconds: float) -> Tokens:
    """The authorization code flow with PKCE S256 on a loopback redirect (any free port)."""
    verifier, challenge = pkce_pair()
    state, nonce = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    endpoint = provider.endpoint("authorization_endpoint")
    assert endpoint is not None

    def url_for(redirect_uri: str) -> str:
        params = provider.authorize_params({
            "response_type": "code", "redirect_uri": redirect_uri, "state": state,
            "nonce": nonce, "code_challenge": challenge, "code_challenge_method": "S256"})
        return endpoint + ("&" if "?" in endpoint else "?") + urllib.parse.urlencode(params)

    result = wait_for_redirect(0, "/callback", state, url_for, browser_opener(browser, say),
                               seconds)
    code = result.get("code", "")
    if not code:
        raise BackendError("the sign-in redirect carries no code")
    return provider.token_request({"grant_type": "authorization_code", "code": code,
                                   "redirect_uri": result["redirect_uri"],
                                   "code_verifier": verifier}, "the code exchange", nonce)


def login_device(provider: Provider, say: Say, seconds: float,
                 sleep: Callable[[float], None] = time.sleep) -> Tokens:
    """The device authorization grant: show the code and URL, poll at the provider's
    interval, slower on ``slow_down``."""
    url = provider.endpoint("device_authorization_endpoint")
    assert url is not None
    form = provider._client_auth(provider.authorize_params({}))
    form.pop("prompt", None)
    status, body = call(provider.context, "POST", url, form=form,
                        timeout=provider.client.timeout, what="device authorization")
    if status != 200:
        raise oauth_error(status, body, "device authorization")
    device_code, user_code = body.get("device_code"), body.get("user_code")
    verify = body.get("verification_uri") or body.get("verification_url")
    if not all(isinstance(v, str) and v for v in (device_code, user_code, verify)):
        raise BackendError("device authorization: the answer lacks a code or URL")
    assert isinstance(device_code, str) and isinstance(user_code, str)
    redact.remember(device_code)
    say(f"To sign in, open {verify} and enter the code {user_code}")
    complete = body.get("verification_uri_complete")
    if isinstance(complete, str) and complete:
        say(f"(or open {complete})")
    interval = _number(body.get("interval")) or 5.0
    ends = time.monotonic() + min(seconds, _number(body.get("expires_in")) or seconds)
    while True:
        if time.monotonic() + interval > ends:
            raise BackendError("the device code expired before the sign-in finished")
        sleep(interval)
        try:
            return provider.token_request({"grant_type": DEVICE_GRANT,
                                           "device_code": device_code}, "device sign-in")
        except ProviderError as exc:
            if exc.code == "authorization_pending":
                continue
            if exc.code == "slow_down":
                interval += 5.0  # RFC 8628 3.5
                continue
            if exc.code == "access_denied":
                raise BackendError("the sign-in was refused at the provider") from None
            if exc.code == "expired_token":
                raise BackendError("the device code expired before the sign-in "
                                   "finished") from None
            raise

