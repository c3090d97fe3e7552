"""The gateway verifier's settings: a TOML file (``KEYHELPER_GATEWAY_CONFIG``) or a dict.

::

    issuer = "https://keyhelper.example.com"   # the tokens' iss: a string or a list
    audience = "litellm"                       # their aud: a string or a list
    jwks_file = "/etc/litellm/jwks.json"       # what `keyhelper jwks` prints (or a list)
    # jwks_url = "https://vault.example.com/v1/identity/oidc/.well-known/keys"
    # oidc_issuer = "https://login.example.com"  # discovery; its issuer is trusted too
    [claims]
    user_id = "user"                           # -> LiteLLM's user_id (required claim)
    team_id = "team"                           # -> team_id (required when set)
    metadata = ["sub", "jti"]                  # -> metadata (when present)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from keyhelper.configfile import parse_toml, read_trusted
from keyhelper.errors import ConfigError

ENV_VAR = "KEYHELPER_GATEWAY_CONFIG"
# Public-key algorithms only: with a shared secret (HS*) the gateway could mint tokens too,
# and "none" is never a signature.
ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384",
              "ES512", "EdDSA")


@dataclass(frozen=True)
class Settings:
    issuer: tuple[str, ...] = ()
    audience: tuple[str, ...] = ()
    jwks_file: tuple[str, ...] = ()
    jwks_url: tuple[str, ...] = ()
    oidc_issuer: tuple[str, ...] = ()
    algorithms: tuple[str, ...] = ALGORITHMS
    leeway: float = 30.0  # seconds of clock skew allowed on exp, nbf and iat
    jwks_ttl: float = 300.0  # refresh the keys in the background after this
    jwks_min_refetch: float = 30.0  # unknown kid: refetch at most this often
    token_cache_size: int = 10000  # verified tokens kept (each until its exp)
    http_timeout: float = 5.0
    ca_file: str | None = None  # CA bundle for https key sources
    user_id: str = "sub"
    team_id: str | None = None
    metadata: tuple[str, ...] = field(default=())
    source: str = "settings"  # where they came from, for messages


STRINGS = ("issuer", "audience", "jwks_file", "jwks_url", "oidc_issuer", "algorithms")
NUMBERS = {"leeway": 0, "jwks_ttl": 1, "jwks_min_refetch": 0, "token_cache_size": 1,
           "http_timeout": 0.1}


def from_file(path: str) -> Settings:
    """The settings in ``path``, a file nobody but its owner (you or root) could have
    written, as keyhelper's own config file: whoever can write it chooses whose tokens the
    gateway accepts."""
    data = read_trusted(path)
    if data is None:
        raise ConfigError("cannot read it (No such file or directory)", source=path)
    return from_mapping(parse_toml(data, path), source=path)


def from_env(env: Mapping[str, str] = os.environ) -> Settings:
    path = env.get(ENV_VAR)
    if not path:
        raise ConfigError(f"set {ENV_VAR} to the gateway's settings file (docs/gateway.md)")
    return from_file(path)


def from_mapping(data: Mapping[str, Any], *, source: str = "settings") -> Settings:
    def fail(key: str, message: str) -> ConfigError:
        return ConfigError(message, source=source, key=key)

    values: dict[str, Any] = {"source": source}
    claims = data.get("claims", {})
    unknown = sorted(set(data) - {*STRINGS, *NUMBERS, "ca_file", "claims"})
    if unknown:
        raise fail(unknown[0], "unknown setting")
    for key in STRINGS:
        if key in data:
            values[key] = _strings(data[key], fail, key)
    for key, least in NUMBERS.items():
        if key in data:
            value = data[key]
            if isinstance(value, bool) or not isinstance(value, int | float) or value < least:
                raise fail(key, f"expected a number from {least}")
            values[key] = int(value) if key == "token_cache_size" else float(value)
    if "ca_file" in data:
        if not isinstance(data["ca_file"], str):
            raise fail("ca_file", "expected a path")
        values["ca_file"] = data["ca_file"]
    if not isinstance(claims, dict):
        raise fail("claims", "expected a table")
    unknown = sorted(set(claims) - {"user_id", "team_id", "metadata"})
    if unknown:
        raise fail(f"claims.{unknown[0]}", "unknown setting (user_id, team_id, metadata)")
    for key in ("user_id", "team_id"):
        if key in claims:
            if not isinstance(claims[key], str) or not claims[key]:
                raise fail(f"claims.{key}", "expected a claim name")
            values[key] = claims[key]
    if "metadata" in claims:
        values["metadata"] = _strings(claims["metadata"], fail, "claims.metadata")
    bad = sorted(set(values.get("algorithms", ())) - set(ALGORITHMS))
    if bad:
        raise fail("algorithms", f"{bad[0]} is not allowed (public-key algorithms only: "
                                 f"{', '.join(ALGORITHMS)})")
    settings = Settings(**values)
    if not (settings.jwks_file or settings.jwks_url or settings.oidc_issuer):
        raise fail("jwks_file", "no key source: set jwks_file, jwks_url or oidc_issuer")
    if not (settings.issuer or settings.oidc_issuer):
        raise fail("issuer", "set the issuer the tokens must name (iss)")
    if not settings.audience:
        raise fail("audience", "set the audience the tokens must name (aud), so that a "
                               "token minted for another service is refused")
    if not settings.algorithms:
        raise fail("algorithms", "allow at least one algorithm")
    return settings


def _strings(value: Any, fail: Any, key: str) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(i, str) and i for i in items):
        raise fail(key, "expected a string or a list of strings")
    return tuple(items)
