"""``vault``: the key from HashiCorp Vault or OpenBao, over its HTTP API (``vault_http``).

KV v1 and v2 are told apart by asking Vault about the mount (``sys/internal/ui/mounts``,
as ``vault kv get`` does); the answer is remembered in the backend state directory. With
``engine = "logical"`` any logical path is read as is (dynamic secrets engines). A lease
duration, and a KV v1 secret's ``ttl`` key, cap how long the key is cached.

Auth methods (token, approle, jwt/oidc, kubernetes, cert) live in ``vault_auth``; the
transport (timeouts inside the run's deadline, retries, transport errors) in ``vault_http``.
"""

from __future__ import annotations

import os

from keyhelper.backend import MISSING, Backend, Option, Token, get_logger, read_user_file
from keyhelper.errors import BackendError, ConfigError, Skip

from .vault_auth import METHODS, Authenticator, Credential, check_options
from .vault_http import (
    Connection,
    VaultHttp,
    VaultStatus,
    is_loopback,
    origin,
    show_origin,
)
from .vault_kv import MountMemo, detect_mount, duration, payload, table

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any, ClassVar

    from keyhelper.backend import Login, Privacy

log = get_logger(__name__)

ENGINES = ("kv", "logical")
VAULT_VARS = ("VAULT_AGENT_ADDR", "VAULT_ADDR", "VAULT_NAMESPACE", "VAULT_CACERT",
              "VAULT_TOKEN")


class VaultBackend(Backend):
    summary = "a field of a Vault / OpenBao secret (KV v1/v2 or any logical path)"
    options: ClassVar = {
        "path": Option(str, required=True,
                       help='the secret, mount included, as for `vault kv get`, e.g. '
                            '"secret/llm/claude-code"; with mount set, the path inside it'),
        "field": Option(str, "api_key", help="the field of the secret holding the key"),
        "engine": Option(str, "kv", help='"kv": v1 or v2, detected; "logical": the path read '
                                         'as is (dynamic secrets engines)', choices=ENGINES,
                         message='expected "kv" or "logical", got {value}'),
        "mount": Option(str, help="the KV mount; with kv_version, skips detection"),
        "kv_version": Option(int, help="with mount, skips detection", choices=(1, 2)),
        "version": Option(int, help="pin a KV v2 version", min=1,
                          message="expected a version number from 1"),
        "addr": Option((str, list), item_type=str,
                       help="Vault address (default $VAULT_ADDR); a cluster's nodes as a list "
                            "or comma-separated: failover between them"),
        "agent_addr": Option(str, help="a local Vault Agent / Proxy, used before addr (default "
                                       "$VAULT_AGENT_ADDR); with its auto-auth no token is "
                                       "needed"),
        "namespace": Option(str, help="Vault Enterprise namespace (default $VAULT_NAMESPACE)"),
        "ca_cert": Option(str, help="CA bundle (PEM) to verify Vault (default $VAULT_CACERT)"),
        "client_cert": Option(str, help="TLS client certificate (PEM)"),
        "client_key": Option(str, help="TLS client key (PEM)"),
        "tls_skip_verify": Option(bool, False, help="do not verify Vault's certificate "
                                                    "(warns; for tests only)"),
        "connect_timeout": Option(float, 2.0, help="seconds to connect"),
        "timeout": Option(float, 5.0, help="seconds to wait for an answer"),
        "retries": Option(int, 2, help="retries on 5xx, 429 and connection errors"),
        "auth": Option(str, "token", help="how keyhelper logs in to Vault", choices=METHODS,
                       message=f"unknown auth method {{value}} (known: {', '.join(METHODS)})"),
        "auth_mount": Option(str, help="where the auth method is mounted (default its name)"),
        "token_file": Option(str, help="token: a file holding the Vault token; kubernetes: "
                                       "the service-account token file"),
        "role_id": Option(str, help="approle: the role ID"),
        "secret_id_file": Option(str, help="approle: file holding the secret ID"),
        "secret_id_env": Option(str, help="approle: variable holding the secret ID"),
        "role": Option(str, help="jwt, oidc, kubernetes: the role; cert: the cert role name"),
        "jwt_file": Option(str, help="jwt, oidc: file holding the JWT"),
        "jwt_backend": Option(str, help="jwt, oidc: configured backend whose value is the JWT"),
        "oidc_callback": Option(str, "http://localhost:8250/oidc/callback",
                                help="oidc without a JWT (browser login by keyhelper login): "
                                     "the redirect URI allowed by the Vault role"),
    }
    _kv_found: tuple[str, int, str] | None = None  # (mount, KV version, "config"|"vault")

    def watched_env(self) -> tuple[str, ...]:
        """Every VAULT_* variable read; VAULT_TOKEN for token auth only."""
        names = [n for n in VAULT_VARS if n != "VAULT_TOKEN" or self.config["auth"] == "token"]
        if self.config.get("secret_id_env"):
            names.append(self.config["secret_id_env"])
        return tuple(names)

    # --- fetch --------------------------------------------------------------------------

    @classmethod
    def validate(cls, options: Mapping[str, Any], *, source: str, key: str) -> dict[str, Any]:
        # engine, kv_version, version and auth are declared on their Options; what the auth
        # method needs is checked here, so both are reported when the chain is built.
        result = super().validate(options, source=source, key=key)
        check_options(result, source=source, key=key)
        return result

    def fetch(self) -> Token:
        http = VaultHttp(self._connection(), self.context)
        auth = Authenticator(self.config, self.context, http)
        credential = Credential()
        try:
            credential = auth.credential()
            try:
                return self._read(http, credential)
            except VaultStatus as exc:
                if exc.status != 403 or not credential.cached_login:
                    raise
            # Vault refused a cached login token (revoked, policies changed): log in again.
            auth.forget()
            credential = auth.credential()
            return self._read(http, credential)
        except VaultStatus as exc:
            raise self._status_error(exc, credential, http) from None
        finally:
            http.close()

    # --- keyhelper login / logout / status (auth = "oidc" without a JWT) -------------------

    def signs_in(self) -> bool:
        return self.config["auth"] == "oidc" and not (self.config.get("jwt_file")
                                                      or self.config.get("jwt_backend"))

    def login(self, request: Login) -> str:
        from .vault_oidc import browser_login

        http = VaultHttp(self._connection(), self.context)
        try:
            token = browser_login(Authenticator(self.config, self.context, http), request,
                                  self.config["oidc_callback"])
        finally:
            http.close()
        return f"signed in to Vault at {http.connection.addr}{_until(token.expires)}"

    def logout(self) -> str | None:
        if not self.signs_in():
            return None
        http = VaultHttp(self._connection(), self.context)
        auth = Authenticator(self.config, self.context, http)
        try:
            kept = auth.cached()
            if kept is None:
                return f"not signed in to Vault at {http.connection.addr}"
            revoked = ", token revoked"
            try:
                http.call("POST", "auth/token/revoke-self", token=kept.token, json={})
            except (VaultStatus, BackendError):
                revoked = ", token not revoked (Vault refused or did not answer)"
            auth.forget()
        finally:
            http.close()
        return f"signed out of Vault at {http.connection.addr}{revoked}"

    def session_status(self) -> str | None:
        if not self.signs_in():
            return None
        http = VaultHttp(self._connection(), self.context)
        try:
            kept = Authenticator(self.config, self.context, http).cached()
        finally:
            http.close()
        addr = http.connection.addr
        if kept is None or (kept.expires is not None and kept.expires <= self.context.now()):
            return f"signed out of Vault at {addr}"
        renew = ", renewable" if kept.renewable else ""
        return f"signed in to Vault at {addr}{_until(kept.expires)}{renew}"

    def _addresses(self) -> tuple[list[str], str, bool]:
        """The addresses to ask, where they were set, and whether it is a local agent: as
        the Vault CLI, an agent's address goes before Vault's; options before variables."""
        env = self.context.env
        for value, where, agent in (
                (self.config.get("agent_addr"), f"backends.{self.name}.agent_addr", True),
                (self.config.get("addr"), f"backends.{self.name}.addr", False),
                (env.get("VAULT_AGENT_ADDR"), "$VAULT_AGENT_ADDR", True),
                (env.get("VAULT_ADDR"), "$VAULT_ADDR", False)):
            items = value if isinstance(value, list) else str(value or "").split(",")
            addrs = [a.strip().rstrip("/") for a in items if a.strip()]
            if addrs:
                return addrs, where, agent
        raise Skip("no Vault address: set addr or $VAULT_ADDR")

    def _connection(self) -> Connection:
        env = self.context.env
        addrs, where, agent = self._addresses()
        for addr in addrs:
            if "://" not in addr:
                raise ConfigError(f"expected a URL like https://vault:8200, got {addr!r}",
                                  key=where)
            where_to = origin(addr)
            if where_to is not None and where_to[0] == "http" and not is_loopback(addr):
                log.warning("vault backend %s: %s is plain http: the Vault token and the key "
                            "travel unencrypted; use https", self.name, show_origin(where_to))
        verify: bool | str = True
        ca_cert = self.config.get("ca_cert") or env.get("VAULT_CACERT")
        if self.config["tls_skip_verify"]:
            log.warning("vault backend %s: TLS certificate verification is off "
                        "(tls_skip_verify); use it for tests only", self.name)
            verify = False
        elif ca_cert:
            verify = _existing(ca_cert, "ca_cert")
        cert: str | tuple[str, str] | None = None
        if self.config.get("client_cert"):
            cert_path = _existing(self.config["client_cert"], "client_cert")
            key_path = self.config.get("client_key")
            cert = (cert_path, _existing(key_path, "client_key", "own")) if key_path else cert_path
        return Connection(",".join(addrs), self.config.get("namespace") or
                          env.get("VAULT_NAMESPACE") or None, verify, cert,
                          self.config["connect_timeout"], self.config["timeout"],
                          max(0, self.config["retries"]),
                          tuple(addrs) if len(addrs) > 1 else (), agent)

    # --- reading ------------------------------------------------------------------------

    def _read(self, http: VaultHttp, credential: Credential) -> Token:
        path = self.config["path"].strip("/")
        if self.config["engine"] == "logical":
            body = http.call("GET", path, token=credential.token)
            return self._token(body, path, payload(body), 0)
        mount, kv_version, remembered = self._mount(http, credential, path)
        try:
            return self._read_kv(http, credential, path, mount, kv_version)
        except VaultStatus as exc:
            if exc.status != 404 or not remembered:
                raise
        # The remembered mount may be out of date (remounted, upgraded to v2): ask again.
        MountMemo(self.context.state_dir, http.connection, self._full_path(path)).forget()
        mount, kv_version, _ = self._mount(http, credential, path)
        return self._read_kv(http, credential, path, mount, kv_version)

    def _read_kv(self, http: VaultHttp, credential: Credential, path: str, mount: str,
                 kv_version: int) -> Token:
        inside = path if self.config.get("mount") else path[len(mount):].strip("/")
        if kv_version == 2:
            api_path = f"{mount}/data/{inside}"
            version = self.config.get("version")
            params = {"version": str(version)} if version else None
            body = http.call("GET", api_path, token=credential.token, params=params)
            data = table(body.get("data"))
            return self._token(body, api_path, data.get("data"), 2)
        api_path = f"{mount}/{inside}"
        body = http.call("GET", api_path, token=credential.token)
        return self._token(body, api_path, body.get("data"), 1)

    def _token(self, body: Mapping[str, Any], api_path: str, data: Any,
               kv_version: int) -> Token:
        field = self.config["field"]
        if not isinstance(data, dict):
            raise BackendError(f"{api_path} holds no data (deleted or destroyed version?)")
        if field not in data:
            names = ", ".join(sorted(str(k) for k in data)) or "none"
            raise BackendError(f"{api_path} has no field {field!r} (fields: {names})")
        value = data[field]
        if not isinstance(value, str):
            raise BackendError(f"field {field!r} of {api_path} is not a string")
        now = self.context.now()
        caps = [float(body.get("lease_duration") or 0)]
        if kv_version == 1:
            caps.append(duration(data.get("ttl")))
        caps = [c for c in caps if c > 0]
        metadata = {"source": f"vault {api_path}"}
        meta = table(body.get("data")).get("metadata") if kv_version == 2 else None
        if isinstance(meta, dict) and meta.get("version") is not None:
            metadata["version"] = str(meta["version"])
        return Token(value.strip(), now + min(caps) if caps else None, metadata)

    # --- KV mount and version -----------------------------------------------------------

    def _mount(self, http: VaultHttp, credential: Credential,
               path: str) -> tuple[str, int, bool]:
        """(mount, KV version, whether it came from the memo): from the options, the memo
        of an earlier run, or Vault."""
        mount_opt = (self.config.get("mount") or "").strip("/")
        version_opt = self.config.get("kv_version")
        if mount_opt and version_opt:
            self._kv_found = (mount_opt, int(version_opt), "config")
            return mount_opt, int(version_opt), False
        memo = MountMemo(self.context.state_dir, http.connection, self._full_path(path))
        cached = memo.read()
        remembered = cached is not None
        if cached is None:
            cached = detect_mount(http, credential, self._full_path(path))
            memo.write(*cached)
        self._kv_found = (cached[0], cached[1], "vault")
        return mount_opt or cached[0], int(version_opt or cached[1]), remembered

    def _full_path(self, path: str) -> str:
        mount_opt = (self.config.get("mount") or "").strip("/")
        return f"{mount_opt}/{path}" if mount_opt else path

    # --- errors -------------------------------------------------------------------------

    def _status_error(self, exc: VaultStatus, credential: Credential,
                      http: VaultHttp) -> BackendError:
        path = self._full_path(self.config["path"].strip("/"))
        addr = http.connection.addr
        if exc.sealed:
            return BackendError(f"Vault at {addr} is sealed; ask its operators to unseal it")
        if exc.status == 403:
            return BackendError(f"permission denied reading {path}: "
                                f"{self._why_denied(http, credential)}")
        if exc.status == 404:
            if exc.no_route:
                return BackendError(f"{path} not found: no secrets engine is mounted there")
            version = self.config.get("version")
            what = f"version {version} of {path}" if version else path
            return BackendError(f"{what} not found{self._mount_note(http, credential)}")
        if exc.status == 429:
            return BackendError(f"Vault at {addr} is rate limiting (HTTP 429)")
        detail = exc.detail()
        return BackendError(f"Vault at {addr} answered HTTP {exc.status} reading {path}"
                            + (f": {detail}" if detail else ""))

    def _why_denied(self, http: VaultHttp, credential: Credential) -> str:
        """A bad token or a policy that does not allow the read: ask Vault which."""
        try:
            http.call("GET", "auth/token/lookup-self", token=credential.token)
        except VaultStatus as exc:
            if exc.status == 403:
                return (f"the token from {credential.source} is not valid (expired, revoked "
                        "or mistyped)")
        except BackendError:
            pass
        else:
            return f"the policies of the token from {credential.source} do not allow it"
        return f"with the token from {credential.source}"

    def _mount_note(self, http: VaultHttp, credential: Credential) -> str:
        """Whether the mount exists, for a 404: people then know which half is wrong."""
        found = self._kv_found
        if found is None:
            return ""
        mount, version, how = found
        if how == "config":
            try:
                http.call("GET", f"sys/internal/ui/mounts/{mount}", token=credential.token)
            except (VaultStatus, BackendError):
                return f" (and no KV mount {mount}/ was found)"
        return f" (the mount {mount}/ exists, KV v{version})"


def _until(expires: float | None) -> str:
    if expires is None:
        return ", no expiry"
    import time

    return ", token until " + time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(expires))


def _existing(path: str, option: str, private: Privacy = "never") -> str:
    """A TLS file, checked as credential files are: a CA bundle someone else could write
    would choose which server gets the Vault token, so it must be the user's or root's and
    not writable by others; a client key must be private too. ssl opens it by path."""
    full = os.path.expanduser(path)
    data, why = read_user_file(full, private)
    if data is None:
        if why == MISSING:
            raise BackendError(f"{option} {full} does not exist or is not a file")
        raise BackendError(f"{option} {full} {why}")
    return full
