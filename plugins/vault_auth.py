"""How the Vault backend gets a Vault token: a given one (token auth) or a login
(approle, jwt/oidc, kubernetes, cert).

A token obtained by login is kept in the backend state directory (a 0600 file apart from
the key cache, with its own expiry), renewed while renewable and half spent, and replaced by
a new login when it cannot be renewed or Vault refuses it. So refreshing the key does not
cost a login each time.
"""

from __future__ import annotations

import os

from keyhelper import redact
from keyhelper.backend import (
    MISSING,
    dump_record,
    get_logger,
    home,
    load_record,
    read_state_file,
    read_user_file,
    record_number,
    write_state_file,
)
from keyhelper.errors import BackendError, ConfigError, Skip

from .vault_http import VaultStatus, state_name

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

    from keyhelper.backend import Context, Privacy

    from .vault_http import VaultHttp

log = get_logger(__name__)

METHODS = ("token", "approle", "jwt", "oidc", "kubernetes", "cert")
LOGIN_METHODS = METHODS[1:]
K8S_TOKEN_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/token"
LOGIN_FORMAT = "keyhelper-vault-login 2"  # 2: the record format of every state file
# A cached login token this close to its end is not used: a new login is cheaper than a
# 403 half-way through the run.
LOGIN_MARGIN = 15.0


class Credential:
    """A Vault token and where it came from (named in errors; never the token)."""

    __slots__ = ("cached_login", "source", "token")

    def __init__(self, token: str = "", source: str = "", cached_login: bool = False):
        self.token = token
        self.source = source
        self.cached_login = cached_login

    def __repr__(self) -> str:
        return f"Credential(source={self.source!r})"


class LoginToken:
    """A token a login gave, with what Vault said of its life (a value: compared by it)."""

    __slots__ = ("expires", "renewable", "token", "ttl")

    def __init__(self, token: str, expires: float | None,  # epoch seconds; None: no expiry
                 ttl: float, renewable: bool):
        self.token = token
        self.expires = expires
        self.ttl = ttl
        self.renewable = renewable

    def _fields(self) -> tuple[str, float | None, float, bool]:
        return self.token, self.expires, self.ttl, self.renewable

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LoginToken) and self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        return f"LoginToken(expires={self.expires!r}, renewable={self.renewable!r})"

    def serialize(self) -> bytes:
        expires = "-" if self.expires is None else repr(self.expires)
        return dump_record(LOGIN_FORMAT, [("expires", expires), ("ttl", repr(self.ttl)),
                                          ("renewable", str(int(self.renewable))),
                                          ("token", self.token)])

    @classmethod
    def parse(cls, data: bytes) -> LoginToken | None:
        fields = load_record(LOGIN_FORMAT, data, ("expires", "ttl", "renewable", "token"))
        if fields is None or not fields["token"]:
            return None
        try:
            expires = None if fields["expires"] == "-" else record_number(fields["expires"])
            ttl = record_number(fields["ttl"])
        except ValueError:
            return None
        return cls(fields["token"], expires, ttl, fields["renewable"] == "1")


def check_options(config: Mapping[str, Any], *, source: str, key: str) -> None:
    """What the auth method needs from the other options (exit 2). The method itself is
    one of METHODS: its Option declares them."""
    method = config["auth"]
    needs: dict[str, tuple[str, ...]] = {"approle": ("role_id",), "jwt": ("role",),
                                         "oidc": ("role",), "kubernetes": ("role",)}
    for option in needs.get(method, ()):
        if not config.get(option):
            raise ConfigError(f"auth = {method!r} needs this option", source=source,
                              key=f"{key}.{option}")
    # oidc with no JWT source is Vault's browser login (vault_oidc, keyhelper login).
    if method == "jwt" and not (config.get("jwt_file") or config.get("jwt_backend")):
        raise ConfigError(f"auth = {method!r} needs jwt_file or jwt_backend",
                          source=source, key=f"{key}.jwt_file")
    if method == "cert" and not config.get("client_cert"):
        raise ConfigError("auth = 'cert' needs client_cert (and client_key)",
                          source=source, key=f"{key}.client_cert")
    if config.get("secret_id_file") and config.get("secret_id_env"):
        raise ConfigError("give secret_id_file or secret_id_env, not both",
                          source=source, key=f"{key}.secret_id_env")


class Authenticator:
    """Gives the backend a Vault token for its reads."""

    def __init__(self, config: Mapping[str, Any], context: Context, http: VaultHttp):
        self.config = config
        self.context = context
        self.http = http
        self.method: str = config["auth"]
        self.mount: str = (config.get("auth_mount") or self.method).strip("/")

    # --- token auth ---------------------------------------------------------------------

    def given_token(self) -> Credential:
        """VAULT_TOKEN, else token_file, else ~/.vault-token (as the vault CLI does)."""
        value = self.context.env.get("VAULT_TOKEN", "").strip()
        if value:
            return _remembered(Credential(value, "$VAULT_TOKEN"))
        if self.config.get("token_file"):
            path = os.path.expanduser(self.config["token_file"])
            value = _read_credential(path, "token_file")
            return _remembered(Credential(value, f"token_file {path}"))
        path = os.path.join(home(), ".vault-token")
        if not os.path.exists(path) and self.http.connection.agent:
            return Credential("", f"the auto-auth of the agent at {self.http.connection.addr}")
        if not os.path.exists(path):
            raise Skip("no Vault token: $VAULT_TOKEN is not set, no token_file option, "
                       "no ~/.vault-token (run: vault login)")
        return _remembered(Credential(_read_credential(path, "~/.vault-token"),
                                      "~/.vault-token"))

    # --- logins -------------------------------------------------------------------------

    @property
    def browser(self) -> bool:
        """Vault's OIDC browser login (``vault login -method=oidc``): a person signs in with
        ``keyhelper login``; the get path only uses and renews the token it left."""
        return self.method == "oidc" and not (self.config.get("jwt_file")
                                              or self.config.get("jwt_backend"))

    def credential(self) -> Credential:
        if self.method == "token":
            return self.given_token()
        label = f"{self.method} login at auth/{self.mount}"
        cached = self._cached_login()
        if cached is not None:
            return _remembered(Credential(cached.token, f"{label} (cached)", cached_login=True))
        if self.browser:
            profile = self.context.profile
            raise Skip(f"signed out of Vault at {self.http.connection.addr} (oidc at "
                               f"auth/{self.mount}): run keyhelper login"
                               + (f" --profile {profile}" if profile else ""))
        return _remembered(Credential(self.login().token, label))

    def keep(self, auth: Mapping[str, Any]) -> LoginToken:
        """Keep the token of a login made elsewhere (the OIDC browser login)."""
        return self._store(auth)

    def cached(self) -> LoginToken | None:
        """The kept login token as it is (no renewal): for status lines."""
        path = self._cache_path()
        data = read_state_file(path) if path else None
        return LoginToken.parse(data) if data else None

    def forget(self) -> None:
        """Drop the cached login token (Vault refused it)."""
        path = self._cache_path()
        if path:
            try:  # noqa: SIM105 - contextlib is not imported for this
                os.unlink(path)
            except FileNotFoundError:
                pass

    def login(self) -> LoginToken:
        payload = self._login_payload()
        path = f"auth/{self.mount}/login"
        try:
            body = self.http.call("POST", path, json=payload)
        except VaultStatus as exc:
            raise self._login_error(exc) from None
        auth = body.get("auth")
        if not isinstance(auth, dict) or not isinstance(auth.get("client_token"), str):
            raise BackendError(f"{self.method} login at {path} returned no token")
        token = self._store(auth)
        log.debug("vault: logged in with %s at %s", self.method, path)
        return token

    def _login_error(self, exc: VaultStatus) -> BackendError:
        where = f"auth/{self.mount}"
        if exc.status == 404 or exc.no_route:
            return BackendError(f"no {self.method} auth method is mounted at {where} "
                                "(set auth_mount)")
        if exc.sealed:
            return BackendError(f"Vault at {self.http.connection.addr} is sealed")
        detail = exc.detail() or f"HTTP {exc.status}"
        return BackendError(f"{self.method} login at {where} refused: {detail}")

    def _login_payload(self) -> dict[str, str]:
        config = self.config
        if self.method == "approle":
            payload = {"role_id": config["role_id"]}
            secret_id = self._secret_id()
            if secret_id is not None:
                payload["secret_id"] = secret_id
            return payload
        if self.method in ("jwt", "oidc"):
            return {"role": config["role"], "jwt": self._jwt()}
        if self.method == "kubernetes":
            path = os.path.expanduser(config.get("token_file") or K8S_TOKEN_FILE)
            if not os.path.exists(path):
                raise Skip(f"no service-account token at {path} (not in a Kubernetes pod?)")
            # Root's, mode 644, in a pod: readable by others is how Kubernetes mounts it.
            token = _read_credential(path, "service-account token", private="never")
            return {"role": config["role"], "jwt": redacted(token)}
        return {"name": config["role"]} if config.get("role") else {}  # cert

    def _secret_id(self) -> str | None:
        if self.config.get("secret_id_file"):
            path = os.path.expanduser(self.config["secret_id_file"])
            return redacted(_read_credential(path, "secret_id_file"))
        if self.config.get("secret_id_env"):
            name = self.config["secret_id_env"]
            value = self.context.env.get(name, "").strip()
            if not value:
                raise Skip(f"${name} (secret_id_env) is not set")
            return redacted(value)
        return None  # a role with bind_secret_id = false

    def _jwt(self) -> str:
        if self.config.get("jwt_file"):
            path = os.path.expanduser(self.config["jwt_file"])
            return redacted(_read_credential(path, "jwt_file"))
        name = self.config["jwt_backend"]
        try:
            value = self.context.fetch_other(name).value.strip()
        except Skip as exc:
            raise Skip(f"jwt_backend {name!r} gave no JWT: {exc.message}") from None
        except BackendError as exc:
            raise BackendError(f"jwt_backend {name!r} failed: {exc.message}") from None
        return redacted(value)

    # --- the login-token cache ----------------------------------------------------------

    def _cache_path(self) -> str:
        if not self.context.state_dir:
            return ""
        config = self.config
        identity = "\x00".join(str(part) for part in (
            self.http.connection.addr.rstrip("/"), self.http.connection.namespace or "",
            self.method, self.mount, config.get("role") or "", config.get("role_id") or "",
            config.get("client_cert") or "", config.get("jwt_file") or "",
            config.get("jwt_backend") or "", config.get("token_file") or ""))
        return os.path.join(self.context.state_dir, state_name("login", identity))

    def _cached_login(self) -> LoginToken | None:
        path = self._cache_path()
        data = read_state_file(path) if path else None
        cached = LoginToken.parse(data) if data else None
        if cached is None:
            return None
        now = self.context.now()
        if cached.expires is not None and cached.expires - now <= LOGIN_MARGIN:
            return None  # spent: log in again
        if cached.expires is not None and cached.expires > now + cached.ttl + LOGIN_MARGIN:
            return None  # stored while the clock was ahead: its expiry says nothing true
        if cached.renewable and cached.expires is not None and (
                cached.expires - now < cached.ttl / 2):
            return self._renew(cached)
        return cached

    def _renew(self, cached: LoginToken) -> LoginToken | None:
        try:
            body = self.http.call("POST", "auth/token/renew-self", token=cached.token, json={})
        except VaultStatus as exc:
            log.debug("vault: renewing the login token failed (HTTP %d); logging in again",
                      exc.status)
            return None
        auth = body.get("auth")
        if not isinstance(auth, dict):
            return None
        auth = {**auth, "client_token": cached.token}
        log.debug("vault: renewed the login token")
        return self._store(auth)

    def _store(self, auth: Mapping[str, Any]) -> LoginToken:
        ttl = float(auth.get("lease_duration") or 0)
        token = LoginToken(redacted(str(auth["client_token"])),
                           self.context.now() + ttl if ttl > 0 else None, ttl,
                           bool(auth.get("renewable")))
        path = self._cache_path()
        if path:
            try:
                write_state_file(path, token.serialize())
            except OSError as exc:
                log.warning("cannot keep the Vault login token in %s (%s)", path, exc.strerror)
        return token


def redacted(secret: str) -> str:
    """Mark ``secret`` for redaction from every message and log line, and return it."""
    redact.remember(secret)
    return secret


def _remembered(credential: Credential) -> Credential:
    redacted(credential.token)
    return credential


def _read_credential(path: str, what: str, private: Privacy = "own") -> str:
    """The first line of a credential file. Missing: Skip (not set up here).

    The rules of the file backend's key file (keyhelper.backend.read_user_file): never
    blocks, a symlink only of the user's or root's, a regular file with one name, owned by
    the user or root, not writable by group or others; one of the user's own must be
    readable by its owner only (as ``vault login`` writes ~/.vault-token, 600).
    """
    data, why = read_user_file(path, private)
    if data is None:
        if why == MISSING:
            raise Skip(f"{what} {path} does not exist")
        raise BackendError(f"{what} {path} {why}")
    try:
        text = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise BackendError(f"{what} {path} is not UTF-8 text") from None
    value = text.splitlines()[0].strip() if text else ""
    if not value:
        raise BackendError(f"{what} {path} is empty")
    return value
