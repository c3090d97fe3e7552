"""Vault's OIDC auth method as ``vault login -method=oidc`` does it, from ``keyhelper login``:
ask Vault for the provider's authorization URL (``auth/<mount>/oidc/auth_url``), open it,
take the provider's redirect on the loopback port that Vault's redirect URI names, and hand
the code to ``auth/<mount>/oidc/callback``. The Vault token it returns is kept in the state
directory like any login token (vault_auth), and renewed there; the get path never opens a
browser.
"""

from __future__ import annotations

from keyhelper.errors import BackendError, ConfigError

from .oidc_flows import browser_opener, wait_for_redirect
from .vault_auth import redacted
from .vault_http import VaultStatus

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from keyhelper.backend import Login

    from .vault_auth import Authenticator, LoginToken


def callback_address(callback: str) -> tuple[int, str]:
    from urllib.parse import urlsplit

    parts = urlsplit(callback)
    if parts.scheme != "http" or parts.hostname not in ("localhost", "127.0.0.1"):
        raise ConfigError(f"oidc_callback must be http://localhost:PORT/PATH or "
                          f"http://127.0.0.1:PORT/PATH, got {callback!r}")
    return parts.port or 80, parts.path or "/"


def browser_login(auth: Authenticator, request: Login, callback: str) -> LoginToken:
    import secrets
    from urllib.parse import parse_qs, urlsplit

    port, path = callback_address(callback)
    mount = auth.mount
    nonce = secrets.token_urlsafe(24)
    try:
        body = auth.http.call("POST", f"auth/{mount}/oidc/auth_url", json={
            "role": auth.config["role"], "redirect_uri": callback, "client_nonce": nonce})
    except VaultStatus as exc:
        raise BackendError(f"oidc auth_url at auth/{mount} refused: "
                           f"{exc.detail() or f'HTTP {exc.status}'}") from None
    data: Any = body.get("data")
    url = data.get("auth_url") if isinstance(data, dict) else None
    if not isinstance(url, str) or not url:
        raise BackendError(f"Vault gave no authorization URL: is {callback} among the role's "
                           "allowed_redirect_uris?")
    state = parse_qs(urlsplit(url).query).get("state", [""])[0]
    result = wait_for_redirect(port, path, state, lambda _: url,
                               browser_opener(request.browser, request.say), request.seconds)
    try:
        answer = auth.http.call("GET", f"auth/{mount}/oidc/callback", params={
            "state": state, "code": redacted(result.get("code", "")), "client_nonce": nonce})
    except VaultStatus as exc:
        raise BackendError(f"oidc callback at auth/{mount} refused: "
                           f"{exc.detail() or f'HTTP {exc.status}'}") from None
    granted = answer.get("auth")
    if not isinstance(granted, dict) or not isinstance(granted.get("client_token"), str):
        raise BackendError(f"oidc callback at auth/{mount} returned no token")
    return auth.keep(granted)
