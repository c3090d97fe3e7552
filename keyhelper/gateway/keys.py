"""The public keys a gateway trusts, and how they stay fresh.

Sources: a JWKS file (what ``keyhelper jwks`` prints), a JWKS URL, or an OIDC issuer's
discovery document (``/.well-known/openid-configuration`` -> ``jwks_uri``). :class:`KeySet`
keeps every source's last good keys in memory: refreshed in the background once ``ttl`` has
passed, at once (but at most every ``min_refetch`` seconds) when a token names an unknown
``kid``, and kept when a source is down, so a JWKS endpoint outage rejects nobody.
"""

from __future__ import annotations

import json
import logging
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from jwt import PyJWK
from jwt.exceptions import PyJWKError

from keyhelper.configfile import read_trusted
from keyhelper.errors import ConfigError, KeyhelperError

log = logging.getLogger("keyhelper.gateway")

MAX_DOCUMENT_BYTES = 1 << 20  # a JWKS or discovery document larger than 1 MiB is not one
# JWK members that only a private key has: such a key must never be published.
PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "k")


class KeySourceError(KeyhelperError):
    """A key source that could not be read; the message names the source, never a key."""


class NoKeys(KeyhelperError):
    """No key from any source at start-up: the gateway refuses to run rather than reject
    everyone (or accept anyone)."""


@dataclass(frozen=True)
class Key:
    kid: str | None
    alg: str | None  # the JWK's own alg member, when it has one
    kty: str
    crv: str | None
    key: Any  # a cryptography public key


class KeySource:
    """Where keys come from; ``load`` returns the JWKS document's ``keys`` list."""

    name = ""

    def load(self) -> list[Any]:
        raise NotImplementedError


class JwksFile(KeySource):
    def __init__(self, path: str):
        self.path = path
        self.name = f"jwks_file {path}"

    def load(self) -> list[Any]:
        # A trust anchor: whoever can write it can add a key and sign any token, so it is
        # read as keyhelper's config file is (yours or root's, nobody else can write it).
        try:
            data = read_trusted(self.path)
        except ConfigError as exc:
            raise KeySourceError(f"{self.name}: {exc.message}") from None
        if data is None:
            raise KeySourceError(f"{self.name}: No such file or directory")
        return _keys_of(self.name, data)


class JwksUrl(KeySource):
    def __init__(self, url: str, timeout: float, context: ssl.SSLContext | None = None):
        self.url = url
        self.timeout = timeout
        self.context = context
        self.name = f"jwks_url {url}"

    def load(self) -> list[Any]:
        return _keys_of(self.name, http_get(self.url, self.timeout, self.context, self.name))


class OidcIssuer(KeySource):
    """Discovery once (its ``jwks_uri`` is remembered), then the JWKS on every load."""

    def __init__(self, issuer: str, timeout: float, context: ssl.SSLContext | None = None):
        self.issuer = issuer.rstrip("/")
        self.timeout = timeout
        self.context = context
        self.name = f"oidc_issuer {self.issuer}"
        self.jwks_uri: str | None = None

    def load(self) -> list[Any]:
        if self.jwks_uri is None:
            url = f"{self.issuer}/.well-known/openid-configuration"
            document = _json(self.name, http_get(url, self.timeout, self.context, self.name))
            jwks_uri = document.get("jwks_uri") if isinstance(document, dict) else None
            if not isinstance(jwks_uri, str) or not jwks_uri.startswith(("https://", "http://")):
                raise KeySourceError(f"{self.name}: the discovery document has no jwks_uri")
            if str(document.get("issuer", "")).rstrip("/") != self.issuer:
                raise KeySourceError(f"{self.name}: the discovery document names another "
                                     "issuer (OIDC discovery requires the same)")
            self.jwks_uri = jwks_uri
        return _keys_of(self.name, http_get(self.jwks_uri, self.timeout, self.context,
                                            self.name))


def http_get(url: str, timeout: float, context: ssl.SSLContext | None, name: str) -> bytes:
    if not url.startswith(("https://", "http://")):
        raise KeySourceError(f"{name}: not an http(s) URL")
    request = urllib.request.Request(url, headers={"Accept": "application/json"})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=timeout,  # noqa: S310 - checked above
                                    context=context) as response:
            return bytes(response.read(MAX_DOCUMENT_BYTES + 1))
    except urllib.error.HTTPError as exc:
        raise KeySourceError(f"{name}: HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise KeySourceError(f"{name}: {type(reason).__name__}: {reason}") from None


def _json(name: str, data: bytes) -> Any:
    if len(data) > MAX_DOCUMENT_BYTES:
        raise KeySourceError(f"{name}: larger than 1 MiB")
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise KeySourceError(f"{name}: not JSON") from None


def _keys_of(name: str, data: bytes) -> list[Any]:
    document = _json(name, data)
    if isinstance(document, dict) and "kty" in document:
        return [document]  # a single JWK
    keys = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(keys, list):
        raise KeySourceError(f"{name}: not a JWKS (expected {{\"keys\": [...]}})")
    return keys


def parse_keys(name: str, jwks: Iterable[Any]) -> dict[str | None, list[Key]]:
    """Usable public keys by kid (None: keys without one). A key that cannot be used is
    left out with a warning: one odd key must not take the others down."""
    found: dict[str | None, list[Key]] = {}
    for index, jwk in enumerate(jwks):
        label = f"{name}: key {index}"
        if not isinstance(jwk, dict):
            log.warning("%s is not a JSON object: left out", label)
            continue
        kid = jwk.get("kid") if isinstance(jwk.get("kid"), str) else None
        label = f"{name}: key {kid!r}" if kid else label
        if any(member in jwk for member in PRIVATE_MEMBERS):
            log.warning("%s is a private or symmetric key: left out (publish only the "
                        "public half of an asymmetric key)", label)
            continue
        if jwk.get("use", "sig") != "sig":
            continue
        try:
            parsed = PyJWK(jwk)
        except (PyJWKError, ValueError, TypeError, KeyError) as exc:
            log.warning("%s cannot be used (%s): left out", label, type(exc).__name__)
            continue
        alg = jwk.get("alg") if isinstance(jwk.get("alg"), str) else None
        crv = jwk.get("crv") if isinstance(jwk.get("crv"), str) else None
        found.setdefault(kid, []).append(Key(kid, alg, str(jwk.get("kty")), crv, parsed.key))
    return found


class KeySet:
    """Every source's last good keys, merged; thread-safe.

    ``on_removed`` is called with the kids a refresh dropped, so that tokens verified with
    a withdrawn key stop being served from the token cache.
    """

    def __init__(self, sources: Sequence[KeySource], *, ttl: float, min_refetch: float,
                 clock: Callable[[], float] = time.monotonic,
                 on_removed: Callable[[set[str]], None] | None = None):
        self.sources = list(sources)
        self.ttl = ttl
        self.min_refetch = min_refetch
        self.clock = clock
        self.on_removed = on_removed
        self.fetches = 0  # loads attempted, for tests and the benchmark
        self._by_source: dict[str, dict[str | None, list[Key]]] = {}
        self._merged: dict[str | None, list[Key]] = {}
        self._loaded_at = float("-inf")
        self._attempted_at = float("-inf")  # the last load, paces retries of a down source
        self._unknown_at = float("-inf")  # the last load for an unknown kid, rate-limited
        self._lock = threading.Lock()
        self._background: threading.Thread | None = None

    def start(self) -> None:
        """Load every source; refuse (:class:`NoKeys`, and an error log line) if none
        yields a key."""
        problems = self.refresh()
        if not self._merged:
            reasons = "; ".join(problems) or "the sources hold no usable key"
            log.error("keyhelper gateway: no signing keys, refusing to start: %s", reasons)
            raise NoKeys(f"keyhelper gateway: no signing keys, refusing to start: {reasons}")

    def find(self, kid: str | None) -> list[Key]:
        """The keys a token naming ``kid`` may be checked with. An unknown kid refetches
        at once, unless a fetch started less than ``min_refetch`` seconds ago."""
        self.refresh_if_stale()
        keys = self._merged.get(kid)
        if keys is None and kid is None:  # no kid: any key may have signed it
            return [key for group in self._merged.values() for key in group]
        if keys is None and self.clock() - self._unknown_at >= self.min_refetch:
            self.refresh(unknown_kid=True)
            keys = self._merged.get(kid)
        # Keys published without a kid may have signed a token that names one.
        return keys or self._merged.get(None, [])

    def refresh_if_stale(self) -> None:
        """Past the TTL: refresh in a background thread; the caller goes on with the keys
        it has, so no request waits on the network for a routine refresh."""
        if self.clock() - self._loaded_at < self.ttl:
            return
        # Never wait here (this may run on the event loop): a held lock means a load is
        # under way already.
        if not self._lock.acquire(blocking=False):
            return
        try:
            if self._background is not None and self._background.is_alive():
                return
            if self.clock() - self._attempted_at < self.min_refetch:
                return  # the last attempt failed moments ago: keep serving the cached keys
            self._background = threading.Thread(target=self.refresh, daemon=True,
                                                name="keyhelper-jwks-refresh")
            self._background.start()
        finally:
            self._lock.release()

    def refresh(self, *, unknown_kid: bool = False) -> list[str]:
        """Load every source now; a source that fails keeps its previous keys. Returns the
        failures (for the start-up line)."""
        with self._lock:
            if unknown_kid:
                if self.clock() - self._unknown_at < self.min_refetch:
                    return []  # another thread refetched while this one waited
                self._unknown_at = self.clock()
            self._attempted_at = self.clock()
            problems = []
            loaded_all = True
            for source in self.sources:
                self.fetches += 1
                try:
                    keys = parse_keys(source.name, source.load())
                except KeySourceError as exc:
                    loaded_all = False
                    problems.append(str(exc))
                    kept = sum(map(len, self._by_source.get(source.name, {}).values()))
                    if kept:
                        log.warning("keyhelper gateway: %s; serving the %d cached keys",
                                    exc, kept)
                    continue
                self._by_source[source.name] = keys
            old = {kid for kid in self._merged if kid is not None}
            merged: dict[str | None, list[Key]] = {}
            for keys in self._by_source.values():
                for kid, group in keys.items():
                    merged.setdefault(kid, []).extend(group)
            self._merged = merged
            if loaded_all:
                self._loaded_at = self.clock()
        removed = old - {kid for kid in merged if kid is not None}
        if removed and self.on_removed is not None:
            self.on_removed(removed)
        return problems

    def kids(self) -> list[str | None]:
        return list(self._merged)


def ssl_context(ca_file: str | None) -> ssl.SSLContext | None:
    """TLS for the JWKS and discovery URLs; a ``ca_file`` is a trust anchor, read as the
    config file is (nobody but its owner could have written it)."""
    if not ca_file:
        return None
    data = read_trusted(ca_file)
    if data is None:
        raise ConfigError("cannot read it (No such file or directory)", source=ca_file)
    try:
        return ssl.create_default_context(cadata=data.decode("ascii"))
    except (ssl.SSLError, UnicodeDecodeError, ValueError):
        raise ConfigError("not a PEM bundle of CA certificates", source=ca_file) from None

