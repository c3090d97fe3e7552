"""Talking to Vault over HTTP: one kept-alive connection per node, per-call timeouts inside the
run's deadline, bounded retries, failover between the nodes of a cluster, redirects followed
by hand (same origin or another configured node only), and transport failures turned into
one-line errors.

Several addresses (a cluster's nodes): a call that fails on one node for a reason another
node may not share (refused, reset, no answer, 5xx, 429, sealed) goes on at once to the next
node, each attempt given at most half the time left so that one blackholed node never uses
the whole deadline; after a round of every node it waits (backoff) and goes round again,
again while the deadline allows (a leader election takes a second or two), unless every
node refused the connection or is sealed (down, not electing). The node
that answered last is tried first by later runs.

Why not hvac (or requests): a cold read is one process making one to three small requests,
and the import is most of its time. Measured here, whole processes against A = ``python -c
pass``: ``import hvac`` 13.6x A, ``import requests`` 11.2x A, while the goal is the whole
run within ``bao kv get`` (8.4x A). So this module speaks the little of Vault's API the
backend uses itself, over vault_wire (HTTP/1.1 on a socket; why not http.client: there);
hvac stays the tests' independent client. ``ssl`` is imported only for https addresses,
``json`` only when there is a body to write or read.

Messages are built from the status and Vault's own ``errors`` list only, never from the URL
path, a body or a header, so no token or secret can end up in them.
"""

from __future__ import annotations

import os
import sys
import time

from keyhelper import redact
from keyhelper.backend import (
    Context,
    dump_record,
    get_logger,
    load_record,
    read_state_file,
    write_state_file,
)
from keyhelper.errors import BackendError, DeadlineExceeded

TYPE_CHECKING = False
if TYPE_CHECKING:
    import ssl
    from collections.abc import Mapping
    from typing import Any

    from .vault_wire import Wire

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
# Our own timeouts end this much before the run's deadline, so the error people see is
# ours ("did not answer") and not the core's generic backstop.
DEADLINE_MARGIN = 0.3
MIN_CALL_SECONDS = 0.05
MAX_BACKOFF = 1.0
MAX_DETAIL = 160
REDIRECTS = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 3
# The largest answer read: a secret, a login or a mount description is a few KiB; more
# is a wrong or hostile server, not something to hold in memory.
MAX_BODY = 1 << 20
DEFAULT_PORTS = {"http": 80, "https": 443}
NODE_FORMAT = "keyhelper-vault-node 1"
# Bytes left as they are in a request path (RFC 3986's unreserved and path characters, and
# "%", as requests does): a secret's path goes to Vault as configured, anything else escaped.
UNRESERVED = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"
PATH_SAFE = frozenset(UNRESERVED + b"/!$&'()*+,;=:@%")
QUERY_SAFE = frozenset(UNRESERVED)
TARGET_SAFE = PATH_SAFE | frozenset(b"?")  # a redirect's path and query, escaped or not


log = get_logger(__name__)  # imports logging only to write a line


def state_name(kind: str, identity: str) -> str:
    """A state file's name for ``identity`` (addresses, paths: not secrets, but not meant to
    show either): ``vault-KIND-`` and 32 hex digits of its SHA-256. CPython's own sha256
    module, not hashlib, whose OpenSSL loading cost 5-13 ms here on every cold read."""
    data = identity.encode()
    for name in ("_sha2", "_sha256"):  # Python 3.12+, 3.11
        try:
            digest = str(__import__(name).sha256(data).hexdigest())
        except (ImportError, AttributeError):
            continue
        return f"vault-{kind}-{digest[:32]}"
    import hashlib

    return f"vault-{kind}-{hashlib.sha256(data).hexdigest()[:32]}"


class Connection:
    """Where Vault is and how to reach it (not keyhelper.config.Settings, the config's)."""

    __slots__ = ("addr", "agent", "cert", "connect_timeout", "namespace", "nodes",
                 "read_timeout", "retries", "verify")

    def __init__(self, addr: str, namespace: str | None = None,
                 verify: bool | str = True,  # False, True or a CA bundle path
                 cert: str | tuple[str, str] | None = None, connect_timeout: float = 2.0,
                 read_timeout: float = 5.0, retries: int = 2,
                 nodes: tuple[str, ...] = (),  # a cluster's addresses, in order; () = (addr,)
                 agent: bool = False):  # a local Vault Agent / Proxy: it may add the token
        self.addr = addr
        self.namespace = namespace
        self.verify = verify
        self.cert = cert
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.retries = retries
        self.nodes = nodes
        self.agent = agent

    def __repr__(self) -> str:
        return f"Connection(addr={self.addr!r}, namespace={self.namespace!r})"

    @property
    def all_nodes(self) -> tuple[str, ...]:
        return self.nodes or (self.addr,)


Settings = Connection  # the former name, for code written against it


class VaultStatus(Exception):
    """Vault answered with an error status; callers turn it into a message with context."""

    def __init__(self, status: int, errors: list[str]):
        self.status = status
        self.errors = errors
        super().__init__(f"HTTP {status}")

    @property
    def sealed(self) -> bool:
        return self.status == 503 and any("sealed" in e.lower() for e in self.errors)

    @property
    def transient(self) -> bool:
        """Worth another try: 5xx, 429, or the 400 a KV v2 mount answers for a moment on a
        node that just became active ("Waiting for the primary to upgrade from
        non-versioned to versioned data ... will resume service when the primary is
        finished"), seen after a leader's death."""
        return self.status in RETRY_STATUSES or (
            self.status == 400 and any("upgrade from non-versioned to versioned" in e
                                       for e in self.errors))

    @property
    def no_route(self) -> bool:
        """404 because no secrets engine is mounted there (not just a missing secret)."""
        return any("no handler for route" in e for e in self.errors)

    def detail(self) -> str:
        """Vault's own error text, shortened and scrubbed of known secrets."""
        text = "; ".join(e.strip().replace("\n", " ") for e in self.errors if e.strip())
        text = redact.redact(" ".join(text.split()))
        return text[:MAX_DETAIL] + ("..." if len(text) > MAX_DETAIL else "")


Origin = tuple[str, str, int]


class VaultHttp:
    """One connection setting, many calls; a connection per node, kept alive between them."""

    def __init__(self, connection: Connection, context: Context):
        self.connection = connection
        self.context = context
        self.nodes = connection.all_nodes
        self.origins = {o for o in map(origin, self.nodes) if o is not None}
        self.node = _NodeMemo(context.state_dir, connection).read(len(self.nodes))
        self.open: dict[Origin, Wire] = {}
        self.tls: ssl.SSLContext | None = None

    def close(self) -> None:
        for wire in self.open.values():
            wire.close()
        self.open.clear()

    @property
    def here(self) -> str:
        """The node being asked (the address when there is one)."""
        return self.nodes[self.node]

    def _next_node(self) -> None:
        self.node = (self.node + 1) % len(self.nodes)

    def call(self, method: str, path: str, *, token: str | None = None,
             json: Mapping[str, Any] | None = None,
             params: Mapping[str, str] | None = None) -> dict[str, Any]:
        """One API call (``path`` without ``/v1/``), retried on 5xx, 429 and connection
        errors while the deadline allows. Returns the JSON body ({} for 204)."""
        first = self.node
        attempt = 0  # rounds of every node
        refused = 0  # nodes of this round where nothing listens
        while True:
            try:
                body = self._once(method, path, token=token, json=json, params=params)
            except VaultStatus as exc:
                if not exc.transient or (exc.sealed and len(self.nodes) == 1):
                    raise
                failure: Exception = exc
                refused += exc.sealed  # as hopeless as a node that is down
            except _Retryable as exc:
                failure = exc.error
                refused += exc.refused
            else:
                if self.node != first:
                    _NodeMemo(self.context.state_dir, self.connection).write(self.node)
                return body
            if len(self.nodes) > 1:
                log.debug("vault: %s %s failed at %s (%s)", method, path, self.here, failure)
                self._next_node()
                if self.node != first and self._time_for(0):
                    continue  # another node at once
                if refused == len(self.nodes):
                    raise failure  # down or sealed everywhere: not electing a leader
                refused = 0
            attempt += 1
            import random  # only once a call failed

            delay = min(MAX_BACKOFF, 0.1 * 2 ** attempt) * (0.5 + random.random())  # noqa: S311
            # A cluster goes round while the deadline allows: electing a new leader takes
            # a second or two, during which every node refuses.
            if (attempt > self.connection.retries and len(self.nodes) == 1) or \
                    not self._time_for(delay):
                raise failure
            log.debug("vault: %s %s failed (%s); retry %d in %.2f s", method, path,
                      failure, attempt, delay)
            time.sleep(delay)

    def _time_for(self, delay: float) -> bool:
        left = self.context.deadline - time.monotonic()
        return left - delay - DEADLINE_MARGIN > MIN_CALL_SECONDS * 4

    def _timeouts(self) -> tuple[float, float]:
        left = self.context.remaining() - DEADLINE_MARGIN
        if left < MIN_CALL_SECONDS:
            raise DeadlineExceeded(f"no time left to ask Vault at {self.here}")
        if len(self.nodes) > 1:
            left = max(MIN_CALL_SECONDS, left / 2)  # leave time for another node
        read = min(self.connection.read_timeout, left)
        return min(self.connection.connect_timeout, read), read

    def _once(self, method: str, path: str, *, token: str | None,
              json: Mapping[str, Any] | None, params: Mapping[str, str] | None) -> dict[str, Any]:
        headers = {"X-Vault-Request": "true"}  # what Vault Agent's require_request_header asks
        if token:
            headers["X-Vault-Token"] = token
        if self.connection.namespace:
            headers["X-Vault-Namespace"] = self.connection.namespace
        data = None
        if json is not None:
            import json as jsonlib

            data = jsonlib.dumps(dict(json)).encode()
            headers["Content-Type"] = "application/json"
        url = self.here + escape(f"/v1/{path}", PATH_SAFE)
        if params:
            url += "?" + "&".join(f"{escape(k, QUERY_SAFE)}={escape(v, QUERY_SAFE)}"
                                  for k, v in params.items())
        status, raw = self._send(method, url, headers, data,
                                 "the token" if token else "the login credentials")
        return _body(status, raw)

    def _send(self, method: str, url: str, headers: dict[str, str], data: bytes | None,
              carried: str) -> tuple[int, bytes]:
        """The status and body of one request, after same-origin redirects (``carried`` says
        what would leak to another origin)."""
        hops = 0
        while True:
            try:
                status, location, raw = self._exchange(method, url, headers, data)
            except _Retryable as exc:
                # The node itself answered (a redirect): where it pointed being down says
                # nothing of the cluster (a standby pointing at the dead leader mid-election).
                exc.refused = exc.refused and hops == 0
                raise
            # -v shows the calls: origin, method and path, never the query (an OIDC code).
            where = origin(url)
            if where is not None and log.isEnabledFor(10):  # DEBUG: -v
                log.debug('vault: %s "%s %s" %d', show_origin(where), method,
                          request_target(url).split("?", 1)[0], status)
            try:
                target = self._redirect(url, status, location, carried)
            except BackendError as exc:
                if len(self.nodes) == 1:
                    raise
                raise _Retryable(exc) from None  # another node may answer itself
            if target is None:
                return status, raw
            hops += 1
            if hops > MAX_REDIRECTS:
                raise BackendError(f"Vault at {self.here} redirected more than "
                                   f"{MAX_REDIRECTS} times; not followed further")
            # 307 and 308 keep the method and body; 301, 302 and 303 turn anything but GET
            # and HEAD into a GET without a body (as browsers, curl and Go do).
            if status in (301, 302, 303) and method not in ("GET", "HEAD"):
                method, data = "GET", None
                headers = {k: v for k, v in headers.items() if k != "Content-Type"}
            url = target

    def _exchange(self, method: str, url: str, headers: dict[str, str],
                  data: bytes | None) -> tuple[int, str | None, bytes]:
        """(status, Location, body) of one request, on the kept connection to the URL's
        origin; transport failures become BackendError, _Retryable or DeadlineExceeded."""
        from .vault_wire import NotHttp, TooLarge

        where = origin(url)
        if where is None:
            raise BackendError(f"not a usable Vault address: {self.here!r}")
        connect, read = self._timeouts()
        target = escape(request_target(url), TARGET_SAFE)  # a Location may hold anything
        connecting = True
        try:
            wire = self.open.get(where)
            reused = wire is not None and wire.connected
            if wire is None or not reused:
                wire = self._connect(where, connect)
            connecting = False
            try:
                answer = wire.exchange(method, target, headers, data, read, MAX_BODY)
            except OSError as exc:
                # Reset, a broken pipe, or TLS's EOF without close_notify.
                stale = isinstance(exc, ConnectionResetError | BrokenPipeError) or \
                    type(exc).__name__ == "SSLEOFError"
                if not (reused and stale):
                    raise
                # The server closed a kept-alive connection meanwhile: once more, anew.
                connecting = True
                wire = self._connect(where, connect)
                connecting = False
                answer = wire.exchange(method, target, headers, data, read, MAX_BODY)
            status, fields, raw = answer
            return status, fields.get("location"), raw
        except TooLarge:
            self._drop(where)
            raise BackendError(f"Vault at {self.here} answered with more than "
                               f"{MAX_BODY >> 20} MiB; not read") from None
        except _TlsSetup as exc:
            raise BackendError(exc.message) from None
        except TimeoutError:
            self._drop(where)
            if connecting:
                raise _Retryable(BackendError(
                    f"cannot connect to Vault at {self.here} (no answer within "
                    f"{connect:.1f} s)")) from None
            late = DeadlineExceeded(f"Vault at {self.here} did not answer within "
                                    f"{read:.1f} s")
            if len(self.nodes) > 1:
                raise _Retryable(late) from None  # another node may answer
            raise late from None
        except OSError as exc:  # ssl.SSLError is one; so is RemoteDisconnected
            self._drop(where)
            ssl = sys.modules.get("ssl")
            if ssl is not None and isinstance(exc, ssl.SSLError):
                reason = _ssl_reason(exc)
                hint = " (check ca_cert / $VAULT_CACERT)" if "verify" in reason else ""
                raise BackendError(f"TLS failure talking to Vault at {self.here}: "
                                   f"{reason}{hint}") from None
            reason = _connection_reason(exc)
            raise _Retryable(BackendError(f"cannot connect to Vault at {self.here} ({reason})"),
                             refused=reason.startswith("connection refused")) from None
        except NotHttp as exc:
            self._drop(where)
            raise _Retryable(BackendError(f"request to Vault at {self.here} failed ({exc})")
                             ) from None
        except ValueError:  # a header that cannot be sent: a line break, not Latin-1
            self._drop(where)
            raise BackendError(f"request to Vault at {self.here} failed (a header that "
                               "cannot be sent: check the token and namespace)") from None

    def _connect(self, where: Origin, timeout: float) -> Wire:
        from .vault_wire import Wire

        self._drop(where)
        scheme, host, port = where
        wire = Wire(host, port, self._tls_context() if scheme == "https" else None)
        self.open[where] = wire
        wire.connect(timeout)
        return wire

    def _drop(self, where: Origin) -> None:
        wire = self.open.pop(where, None)
        if wire is not None:
            wire.close()

    def _tls_context(self) -> ssl.SSLContext:
        """One TLS setting for every https node: the CA bundle (or the system's), the client
        certificate, or no verification at all (tls_skip_verify)."""
        if self.tls is None:
            self.tls = tls_context(self.connection.verify, self.connection.cert)
        return self.tls

    def _redirect(self, url: str, status: int, location: str | None,
                  carried: str) -> str | None:
        """Where a redirect points, if it may be followed: None when it is not a redirect;
        an error when it leaves the origin (another host or port, or a scheme change:
        https -> http would also send everything in clear). Only scheme, host and port are
        shown: the path and query may carry secrets."""
        if status not in REDIRECTS or location is None:
            return None
        from urllib.parse import urljoin

        here = origin(url)
        target = urljoin(url, location)
        there = origin(target)
        if here is None or there is None:
            raise BackendError(f"Vault at {self.here} redirected to an address that "
                               "is not an http(s) URL; not followed")
        if there != here and there not in self.origins:  # another configured node is fine
            why = ("a downgrade to plain http" if (here[0], there[0]) == ("https", "http")
                   else "another origin")
            raise BackendError(f"Vault at {show_origin(here)} redirected to "
                               f"{show_origin(there)} ({why}); not followed: {carried} "
                               "would go there")
        return target


def tls_context(verify: bool | str, cert: str | tuple[str, str] | None) -> ssl.SSLContext:
    import ssl

    try:
        if verify is False:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        elif isinstance(verify, str):  # a file, checked by the backend (vault._existing)
            context = ssl.create_default_context(cafile=verify)
        else:
            context = ssl.create_default_context()
            _certifi_fallback(context)
    except (ssl.SSLError, OSError):
        raise _TlsSetup(f"cannot load the CA certificates in {verify}") from None
    if cert:
        certfile, keyfile = (cert, None) if isinstance(cert, str) else cert
        try:
            # An encrypted key would make OpenSSL ask for its passphrase on the terminal.
            context.load_cert_chain(certfile, keyfile, password=lambda: b"")
        except (ssl.SSLError, OSError):
            raise _TlsSetup(f"cannot load the TLS client certificate {certfile} (PEM "
                            "certificate and unencrypted key expected)") from None
    return context


def _certifi_fallback(context: ssl.SSLContext) -> None:
    """The system's CAs are Vault's too, as for the Go CLI; a Python without any (python.org's
    on macOS before "Install Certificates") uses certifi's bundle if it is installed."""
    import ssl

    paths = ssl.get_default_verify_paths()
    if sys.platform == "win32" or paths.cafile or paths.capath:
        return
    try:
        import certifi  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        return
    context.load_verify_locations(cafile=certifi.where())


class _NodeMemo:
    """Which node of a cluster answered last (its index), kept in the state directory so
    that later runs do not start with a node that is down."""

    def __init__(self, state_dir: str, connection: Connection):
        self.path = ""
        if state_dir and len(connection.all_nodes) > 1:
            self.path = os.path.join(state_dir,
                                     state_name("node", "\x00".join(connection.all_nodes)))

    def read(self, count: int) -> int:
        data = read_state_file(self.path) if self.path else None
        fields = load_record(NODE_FORMAT, data, ("node",)) if data else None
        if fields is None or not fields["node"].isdigit() or int(fields["node"]) >= count:
            return 0
        return int(fields["node"])

    def write(self, node: int) -> None:
        if self.path:
            try:  # noqa: SIM105 - contextlib is not imported for this
                write_state_file(self.path, dump_record(NODE_FORMAT, [("node", str(node))]))
            except OSError:
                pass  # only a hint for the next run


class _Retryable(Exception):
    def __init__(self, error: BackendError, refused: bool = False):
        self.error = error
        self.refused = refused
        super().__init__(error.message)


class _TlsSetup(Exception):
    def __init__(self, message: str):
        self.message = message
        super().__init__(message)


def escape(text: str, safe: frozenset[int]) -> str:
    """``text`` percent-encoded (UTF-8) but for the bytes in ``safe``: urllib.parse.quote,
    without importing urllib.parse (with ipaddress: 3-8 ms here on every cold read)."""
    return "".join(chr(b) if b in safe else f"%{b:02X}" for b in text.encode())


def request_target(url: str) -> str:
    """The path and query of an absolute URL, as the request line carries them."""
    after = url.partition("://")[2].partition("#")[0]
    cut = min((i for i in (after.find("/"), after.find("?")) if i >= 0), default=len(after))
    return after[cut:] if after[cut:cut + 1] == "/" else "/" + after[cut:]


def split_host(url: str) -> tuple[str, str, str] | None:
    """(scheme, host, port text) of ``scheme://[user@]host[:port][/path...]``, scheme and
    host in lower case, an IPv6 host without its brackets: what urllib.parse.urlsplit gives
    as scheme, hostname and port, for the URLs a configuration holds. None: no "://"."""
    scheme, sep, rest = url.strip().partition("://")
    if not sep:
        return None
    for end in "/?#":
        rest = rest.partition(end)[0]
    authority = rest.rpartition("@")[2]
    if authority.startswith("["):
        host, bracket, after = authority[1:].partition("]")
        if not bracket or (after and not after.startswith(":")):
            return None
        port = after[1:]
    else:
        host, _, port = authority.partition(":")
    return scheme.lower(), host.lower(), port


def origin(url: str) -> Origin | None:
    """(scheme, host, port) of an http(s) URL, the port made explicit; None for others."""
    parts = split_host(url)
    if parts is None:
        return None
    scheme, host, port = parts
    if scheme not in DEFAULT_PORTS or not host:
        return None
    if not port:
        return scheme, host, DEFAULT_PORTS[scheme]
    if not (port.isascii() and port.isdigit() and int(port) <= 65535):
        return None
    return scheme, host, int(port)


def show_origin(where: Origin) -> str:
    """scheme://host:port, for messages; the host comes from a server, so only plain
    host-name characters are shown."""
    scheme, host, port = where
    host = "".join(c if c.isascii() and (c.isalnum() or c in "._:%-") else "?"
                   for c in host)[:100]
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


def is_loopback(addr: str) -> bool:
    """Whether a Vault address names this machine: localhost, 127.0.0.0/8 or ::1 (also as
    an IPv4-mapped IPv6 address). Other names are not resolved: DNS could say anything."""
    parts = split_host(addr)
    host = (parts[1] if parts else "").rstrip(".")
    if host == "localhost":
        return True
    quad = host.split(".")
    if len(quad) == 4 and all(p.isdigit() and p.isascii() and int(p) < 256 for p in quad):
        return quad[0] == "127"  # the usual case, without importing ipaddress
    import ipaddress

    try:
        ip = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return False
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    return ip.is_loopback or bool(mapped and mapped.is_loopback)


def _body(status: int, raw: bytes) -> dict[str, Any]:
    body: Any = {}
    if raw:
        import json

        try:
            body = json.loads(raw)
        except (ValueError, RecursionError):
            body = None
    if 200 <= status < 300:
        if status != 204 and not isinstance(body, dict):
            raise BackendError(f"Vault answered {status} with a body that is not JSON")
        return body or {}
    errors = body.get("errors") if isinstance(body, dict) else None
    if not isinstance(errors, list):
        errors = []
    raise VaultStatus(status, [str(e) for e in errors])


def _connection_reason(exc: BaseException) -> str:
    text = f"{type(exc).__name__} {exc}"
    for marker, reason in (("Connection refused", "connection refused: is it running?"),
                           ("ConnectionRefused", "connection refused: is it running?"),
                           ("Name or service not known", "unknown host name"),
                           ("nodename nor servname", "unknown host name"),
                           ("Temporary failure in name resolution", "name resolution failed"),
                           ("Network is unreachable", "network unreachable"),
                           ("No route to host", "no route to host"),
                           ("RemoteDisconnected", "it closed the connection without answering"),
                           ("Connection reset", "connection reset")):
        if marker in text:
            return reason
    return "connection failed"


def _ssl_reason(exc: Exception) -> str:
    text = str(exc)
    if "wrong version number" in text.lower():
        return "it does not speak TLS there (an http:// address?)"
    for marker in ("certificate verify failed", "hostname mismatch", "self-signed certificate",
                   "unknown ca", "certificate required", "bad certificate",
                   "certificate unknown", "handshake failure"):
        if marker.lower() in text.lower():
            detail = text[text.lower().index(marker.lower()):]
            for end in (" (_ssl", ")", "'", '"'):
                detail = detail.split(end)[0]
            return detail.strip(" :,")[:MAX_DETAIL]
    return "handshake failed"
