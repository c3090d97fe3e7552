"""Verify a presented key as a JWT, framework-free: signature against the trusted keys,
``exp``/``nbf``/``iat`` with a leeway, ``iss``, ``aud``, the algorithm allow-list; then map
configured claims to a user id, a team id and metadata.

A verified token is cached by its SHA-256 digest until its ``exp`` (bounded LRU), so a busy
gateway verifies each token once: a hit is a hash and a dict lookup. Rejections raise
:class:`Rejected`, whose message is a short reason that never holds the token.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jwt
from cachetools import TLRUCache

from keyhelper.errors import KeyhelperError
from keyhelper.gateway.keys import (
    JwksFile,
    JwksUrl,
    Key,
    KeySet,
    KeySource,
    OidcIssuer,
    ssl_context,
)
from keyhelper.gateway.settings import Settings

log = logging.getLogger("keyhelper.gateway")

MAX_TOKEN_CHARS = 16384  # Claude Code sends at most this many
KEY_TYPES = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}
CURVES = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}


class Rejected(KeyhelperError):
    """A presented key the gateway refuses. ``str()`` is the short reason shown to the
    caller; it never holds the token."""

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(reason)


@dataclass(frozen=True)
class Identity:
    user_id: str
    team_id: str | None
    metadata: Mapping[str, Any]
    expires_at: float  # the token's exp
    kid: str | None = None
    claims: Mapping[str, Any] = field(default_factory=dict, repr=False)


def _until_exp(_key: bytes, identity: Identity, _now: float) -> float:
    return identity.expires_at


class Verifier:
    def __init__(self, settings: Settings, sources: list[KeySource] | None = None, *,
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time):
        self.settings = settings
        context = ssl_context(settings.ca_file)
        if sources is None:
            sources = [*(JwksFile(p) for p in settings.jwks_file),
                       *(JwksUrl(u, settings.http_timeout, context) for u in settings.jwks_url),
                       *(OidcIssuer(i, settings.http_timeout, context)
                         for i in settings.oidc_issuer)]
        self.issuers = list(dict.fromkeys([*settings.issuer,
                                           *(i.rstrip("/") for i in settings.oidc_issuer)]))
        self.keys = KeySet(sources, ttl=settings.jwks_ttl,
                           min_refetch=settings.jwks_min_refetch, clock=clock,
                           on_removed=self._forget_kids)
        self._cache: TLRUCache[bytes, Identity] = TLRUCache(
            maxsize=settings.token_cache_size, ttu=_until_exp, timer=wall)
        self._lock = threading.Lock()
        self._algorithms = frozenset(settings.algorithms)

    def start(self) -> Verifier:
        """Load the keys; raises :class:`keyhelper.gateway.keys.NoKeys` when there are none."""
        self.keys.start()
        return self

    def cached(self, token: str) -> Identity | None:
        """The identity of a token verified before and not expired, else None. No I/O."""
        return self._cached(_digest(token))

    def verify(self, token: str) -> Identity:
        """The identity a token proves, or :class:`Rejected`. May fetch keys (an unknown
        kid, rate-limited): call it off the event loop."""
        digest = _digest(token)
        identity = self._cached(digest)
        if identity is None:
            identity = self._verify(token)
            with self._lock:
                self._cache[digest] = identity
        return identity

    def _cached(self, digest: bytes) -> Identity | None:
        with self._lock:
            identity = self._cache.get(digest)
        if identity is not None:
            self.keys.refresh_if_stale()
        return identity

    def _verify(self, token: str) -> Identity:
        if not token or len(token) > MAX_TOKEN_CHARS or token.count(".") != 2:
            raise Rejected("malformed token (not a JWT)")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.DecodeError:
            raise Rejected("malformed token (not a JWT)") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self._algorithms:
            raise Rejected(f"algorithm {str(alg)[:20]!r} not allowed")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise Rejected("malformed token (kid is not a string)")
        candidates = self.keys.find(kid)
        if not candidates:
            raise Rejected("unknown signing key (kid)")
        keys = [key for key in candidates if _fits(key, alg)]
        if not keys:
            raise Rejected(f"algorithm {alg} does not fit the signing key")
        claims = self._decode(token, keys, alg)
        return Identity(
            user_id=self._claim(claims, self.settings.user_id),
            team_id=(self._claim(claims, self.settings.team_id)
                     if self.settings.team_id else None),
            metadata={name: value for name in self.settings.metadata
                      if (value := _lookup(claims, name)) is not None},
            expires_at=float(claims["exp"]), kid=kid, claims=claims)

    def _decode(self, token: str, keys: list[Key], alg: str) -> dict[str, Any]:
        failure: Rejected | None = None
        for key in keys:
            try:
                claims: dict[str, Any] = jwt.decode(
                    token, key.key, algorithms=[alg], audience=list(self.settings.audience),
                    issuer=self.issuers, leeway=self.settings.leeway,
                    options={"require": ["exp", "iss", "aud"]})
                return claims
            except jwt.InvalidSignatureError:
                failure = Rejected("bad signature")
                continue  # several keys without a kid: try the next one
            except jwt.ExpiredSignatureError:
                raise Rejected("token expired") from None
            except jwt.ImmatureSignatureError:
                raise Rejected("token not valid yet (nbf or iat in the future)") from None
            except jwt.InvalidAudienceError:
                raise Rejected("wrong audience (aud)") from None
            except jwt.InvalidIssuerError:
                raise Rejected("wrong issuer (iss)") from None
            except jwt.MissingRequiredClaimError as exc:
                raise Rejected(f"missing claim {exc.claim}") from None
            except jwt.InvalidKeyError:
                failure = Rejected("bad signature (key does not fit the algorithm)")
            except jwt.PyJWTError:  # DecodeError and the rest: the body is not valid
                raise Rejected("malformed token") from None
        raise failure or Rejected("bad signature")

    def _claim(self, claims: Mapping[str, Any], name: str | None) -> str:
        value = _lookup(claims, name or "")
        if isinstance(value, bool) or not isinstance(value, str | int) or value == "":
            raise Rejected(f"missing claim {name}")
        return str(value)

    def _forget_kids(self, kids: set[str]) -> None:
        """A key left the JWKS (withdrawn, maybe compromised): its tokens are verified
        again, and refused, from now on."""
        with self._lock:
            gone = [digest for digest, identity in self._cache.items()
                    if identity.kid in kids]
            for digest in gone:
                self._cache.pop(digest, None)
        log.warning("keyhelper gateway: keys %s left the JWKS; %d cached tokens dropped",
                    ", ".join(sorted(kids)), len(gone))


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def _fits(key: Key, alg: str) -> bool:
    """Whether ``key`` may check an ``alg`` signature: the JWK's own alg if it has one,
    else its key type (and curve): no algorithm confusion."""
    if key.alg is not None:
        return key.alg == alg
    if KEY_TYPES.get(alg[:2]) != key.kty:
        return False
    return alg not in CURVES or key.crv == CURVES[alg]


def _lookup(claims: Mapping[str, Any], name: str) -> Any:
    """A claim by name; a dotted name reaches into nested objects (``ext.team``)."""
    if name in claims:
        return claims[name]
    value: Any = claims
    for part in name.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value
