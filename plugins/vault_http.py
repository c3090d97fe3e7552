"""Talking to Vault: hvac's adapter, per-call timeouts inside the run's deadline, bounded
retries, failover between the nodes of a cluster, redirects followed by hand (same origin or
another configured node only), and transport failures turned into one-line errors.

Several addresses (a cluster's nodes): a call that fails on one node for a reason another
node may not share (refused, reset, no answer, 5xx, 429, sealed) goes on at once to the next
node, each attempt given at most half the time left so that one blackholed node never uses
the whole deadline; after a round of every node it waits (backoff) and goes round again,
again while the deadline allows (a leader election takes a second or two), unless every
node refused the connection or is sealed (down, not electing). The node
that answered last is tried first by later runs.

Responses are inspected here rather than through hvac's exceptions, whose text carries the
request URL and the raw body; messages are built from the status and Vault's own ``errors``
list only, so no token or secret can end up in them.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import logging
import os
import random
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin, urlsplit

from keyhelper import redact
from keyhelper.backend import (
    Context,
    dump_record,
    load_record,
    read_state_file,
    write_state_file,
)
from keyhelper.errors import BackendError, DeadlineExceeded

if TYPE_CHECKING:
    import requests as requests_mod

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
# Our own timeouts end this much before the run's deadline, so the error people see is
# ours ("did not answer") and not the core's generic backstop.
DEADLINE_MARGIN = 0.3
MIN_CALL_SECONDS = 0.05
MAX_BACKOFF = 1.0
MAX_DETAIL = 160
REDIRECTS = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 3
DEFAULT_PORTS = {"http": 80, "https": 443}
NODE_FORMAT = "keyhelper-vault-node 1"


@dataclass(frozen=True)
class Connection:
    """Where Vault is and how to reach it (not keyhelper.config.Settings, the config's)."""

    addr: str
    namespace: str | None = None
    verify: bool | str = True  # False, True or a CA bundle path
    cert: str | tuple[str, str] | None = None
    connect_timeout: float = 2.0
    read_timeout: float = 5.0
    retries: int = 2
    nodes: tuple[str, ...] = ()  # a cluster's addresses, in order; () means (addr,)
    agent: bool = False  # a local Vault Agent / Proxy: it may add the token itself

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
    def no_route(self) -> bool:
        """404 because no secrets engine is mounted there (not just a missing secret)."""
        return any("no handler for route" in e for e in self.errors)

    def detail(self) -> str:
        """Vault's own error text, shortened and scrubbed of known secrets."""
        text = "; ".join(e.strip().replace("\n", " ") for e in self.errors if e.strip())
        text = redact.redact(" ".join(text.split()))
        return text[:MAX_DETAIL] + ("..." if len(text) > MAX_DETAIL else "")


class VaultHttp:
    """One connection setting, many calls. The hvac import happens here, on first use."""

    def __init__(self, connection: Connection, context: Context):
        import requests
        from hvac.adapters import RawAdapter

        self.connection = connection
        self.context = context
        self.requests = requests
        self.nodes = connection.all_nodes
        self.origins = {o for o in map(origin, self.nodes) if o is not None}
        self.node = _NodeMemo(context.state_dir, connection).read(len(self.nodes))
        self.session = session = _no_redirect_session()
        # No ~/.netrc credentials or proxy variables: only what the configuration says.
        session.trust_env = False
        # Set on the session first: hvac takes a given session's verify and cert over its own.
        session.verify = connection.verify
        session.cert = connection.cert
        # Redirects are followed in _send, same origin only: requests would keep X-Vault-Token
        # and re-send login bodies to any host, https -> http included.
        self.adapter = RawAdapter(base_uri=self.nodes[self.node],
                                  namespace=connection.namespace,
                                  verify=connection.verify, cert=connection.cert, session=session,
                                  allow_redirects=False)
        if connection.verify is False:
            import urllib3

            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)

    def close(self) -> None:
        self.adapter.close()

    @property
    def here(self) -> str:
        """The node being asked (the address when there is one)."""
        return self.nodes[self.node]

    def _next_node(self) -> None:
        self.node = (self.node + 1) % len(self.nodes)
        self.adapter.base_uri = self.here

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
                if exc.status not in RETRY_STATUSES or (exc.sealed and len(self.nodes) == 1):
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
        self.adapter.token = token
        try:
            return _body(self._send(method, path, json, params,
                                    "the token" if token else "the login credentials"))
        finally:
            self.adapter.token = None

    def _send(self, method: str, path: str, json: Mapping[str, Any] | None,
              params: Mapping[str, str] | None, carried: str) -> Any:
        """The response to one request, after same-origin redirects (``carried`` says what
        would leak to another origin)."""
        connect, read = self._timeouts()
        exc_mod = self.requests.exceptions
        try:
            response = self.adapter.request(method, f"/v1/{path}", raise_exception=False,
                                            json=dict(json) if json is not None else None,
                                            params=dict(params) if params else None,
                                            timeout=(connect, read))
            hops = 0
            while (target := self._redirect(response, carried)) is not None:
                hops += 1
                if hops > MAX_REDIRECTS:
                    raise BackendError(f"Vault at {self.here} redirected more than "
                                       f"{MAX_REDIRECTS} times; not followed further")
                connect, read = self._timeouts()
                response = self.session.send(_redirected(response, target),
                                             allow_redirects=False, timeout=(connect, read))
        except exc_mod.SSLError as exc:
            reason = _ssl_reason(exc)
            hint = " (check ca_cert / $VAULT_CACERT)" if "verify" in reason else ""
            raise BackendError(f"TLS failure talking to Vault at {self.here}: "
                               f"{reason}{hint}") from None
        except exc_mod.ConnectTimeout:
            raise _Retryable(BackendError(
                f"cannot connect to Vault at {self.here} (no answer within "
                f"{connect:.1f} s)")) from None
        except exc_mod.Timeout:
            late = DeadlineExceeded(f"Vault at {self.here} did not answer within "
                                    f"{read:.1f} s")
            if len(self.nodes) > 1:
                raise _Retryable(late) from None  # another node may answer
            raise late from None
        except exc_mod.ConnectionError as exc:
            reason = _connection_reason(exc)
            raise _Retryable(BackendError(f"cannot connect to Vault at {self.here} ({reason})"),
                             refused=reason.startswith("connection refused")) from None
        except exc_mod.InvalidURL:
            raise BackendError(f"not a usable Vault address: {self.here!r}") from None
        except exc_mod.RequestException as exc:
            raise BackendError(f"request to Vault at {self.here} failed "
                               f"({type(exc).__name__})") from None
        return response

    def _redirect(self, response: Any, carried: str) -> str | None:
        """Where a redirect points, if it may be followed: None when ``response`` is not a
        redirect; an error when it leaves the origin (another host or port, or a scheme
        change: https -> http would also send everything in clear). Only scheme, host and
        port are shown: the path and query may carry secrets."""
        if response.status_code not in REDIRECTS or "location" not in response.headers:
            return None
        url = str(response.url)
        here = origin(url)
        target = urljoin(url, str(response.headers["location"]))
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
        response.close()
        return target


class _NodeMemo:
    """Which node of a cluster answered last (its index), kept in the state directory so
    that later runs do not start with a node that is down."""

    def __init__(self, state_dir: str, connection: Connection):
        self.path = ""
        if state_dir and len(connection.all_nodes) > 1:
            name = hashlib.sha256("\x00".join(connection.all_nodes).encode()).hexdigest()[:32]
            self.path = os.path.join(state_dir, f"vault-node-{name}")

    def read(self, count: int) -> int:
        data = read_state_file(self.path) if self.path else None
        fields = load_record(NODE_FORMAT, data, ("node",)) if data else None
        if fields is None or not fields["node"].isdigit() or int(fields["node"]) >= count:
            return 0
        return int(fields["node"])

    def write(self, node: int) -> None:
        if self.path:
            with contextlib.suppress(OSError):
                write_state_file(self.path, dump_record(NODE_FORMAT, [("node", str(node))]))


class _Retryable(Exception):
    def __init__(self, error: BackendError, refused: bool = False):
        self.error = error
        self.refused = refused
        super().__init__(error.message)


def _no_redirect_session() -> requests_mod.Session:
    """A requests session that never follows a redirect, whatever ``allow_redirects`` a
    caller (hvac) passes: requests asks get_redirect_target() before each hop."""
    import requests

    class NoRedirectSession(requests.Session):
        def get_redirect_target(self, resp: requests.Response) -> str | None:
            return None

    return NoRedirectSession()


def _redirected(response: Any, target: str) -> Any:
    """The request to send to ``target`` (same origin) for a redirect ``response``, with the
    method and body HTTP gives it: 307 and 308 keep both; 301, 302 and 303 turn anything but
    GET and HEAD into a GET without a body (as browsers, curl and Go do)."""
    request = response.request.copy()
    request.prepare_url(target, {})
    if response.status_code in (301, 302, 303) and request.method not in ("GET", "HEAD"):
        request.method = "GET"
        request.body = None
        for name in ("Content-Type", "Content-Length", "Transfer-Encoding"):
            request.headers.pop(name, None)
    return request


Origin = tuple[str, str, int]


def origin(url: str) -> Origin | None:
    """(scheme, host, port) of an http(s) URL, the port made explicit; None for others."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        return None
    if scheme not in DEFAULT_PORTS or not parts.hostname:
        return None
    return scheme, parts.hostname, port or DEFAULT_PORTS[scheme]


def show_origin(where: Origin) -> str:
    """scheme://host:port, for messages; the host comes from a server, so only plain
    host-name characters are shown."""
    scheme, host, port = where
    host = re.sub(r"[^A-Za-z0-9._:%-]", "?", host)[:100]
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


def is_loopback(addr: str) -> bool:
    """Whether a Vault address names this machine: localhost, 127.0.0.0/8 or ::1 (also as
    an IPv4-mapped IPv6 address). Other names are not resolved: DNS could say anything."""
    host = (urlsplit(addr).hostname or "").rstrip(".")
    if host == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return False
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    return ip.is_loopback or bool(mapped and mapped.is_loopback)


def _body(response: Any) -> dict[str, Any]:
    status = int(response.status_code)
    try:
        body = response.json() if response.content else {}
    except ValueError:
        body = None
    if 200 <= status < 300:
        if status != 204 and not isinstance(body, dict):
            raise BackendError(f"Vault answered {status} with a body that is not JSON")
        return body or {}
    errors = body.get("errors") if isinstance(body, dict) else None
    if not isinstance(errors, list):
        errors = []
    raise VaultStatus(status, [str(e) for e in errors])


def _connection_reason(exc: Exception) -> str:
    text = str(exc)
    for marker, reason in (("Connection refused", "connection refused: is it running?"),
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
