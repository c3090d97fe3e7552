"""``jwt``: mints a short-lived signed JWT per developer (``user``, ``team`` ... claims).

The signing key lives in another configured backend (``key = "signing"``: Vault, the
keyring, the environment) or in a private PEM file (``key_file``). pyjwt and cryptography
are imported only when a token is minted, so a cache hit never pays for them.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import string
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from keyhelper import redact
from keyhelper.backend import (
    LOGIN_VARS,
    MISSING,
    Backend,
    Option,
    Token,
    login_name,
    read_user_file,
)
from keyhelper.errors import BackendError, ConfigError, Skip, Unavailable

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.types import (
        PrivateKeyTypes,
        PublicKeyTypes,
    )

# Algorithm -> key family. HMAC secrets must be at least as long as the hash (RFC 7518 3.2).
ALGORITHMS: dict[str, str] = {
    "HS256": "hmac", "HS384": "hmac", "HS512": "hmac",
    "RS256": "rsa", "RS384": "rsa", "RS512": "rsa", "PS256": "rsa",
    "ES256": "ec", "ES384": "ec",
    "EdDSA": "okp",
}
HMAC_MIN_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}
EC_CURVES = {"ES256": ("secp256r1", "P-256"), "ES384": ("secp384r1", "P-384")}
MIN_RSA_BITS = 2048
NEEDS = {"hmac": "a shared secret", "rsa": f"an RSA private key of {MIN_RSA_BITS} bits or more",
         "okp": "an Ed25519 or Ed448 private key"}
# Claims keyhelper sets itself, and the ones that have their own option.
MINTED_CLAIMS = ("iat", "nbf", "exp", "jti")
OPTION_CLAIMS = {"iss": "issuer", "aud": "audience", "sub": "subject"}
PLACEHOLDERS = ("user", "host", "profile")
MAX_KEY_BYTES = 65536


class JwtBackend(Backend):
    summary = "mints a short-lived signed JWT (key from another backend or a PEM file)"
    options: ClassVar = {
        "algorithm": Option(str, "RS256", help="the signing algorithm", choices=tuple(ALGORITHMS),
                            message=f"unknown algorithm {{value}} (expected one of: "
                                    f"{', '.join(ALGORITHMS)})"),
        "key": Option(str, help="name of the configured backend holding the signing key"),
        "key_file": Option(str, help="PEM private key (or HMAC secret) file, mode 600; ~ expands"),
        "kid": Option(str, help="key id header (default: RFC 7638 thumbprint of a public key)"),
        "issuer": Option(str, help="iss claim"),
        "audience": Option((str, list), help="aud claim: a string or a list"),
        "user": Option(str, help="user claim and {user} (default: the login name of the "
                                 "account keyhelper runs as)"),
        "subject": Option(str, help="sub claim (default: the user); placeholders apply"),
        # exp = iat + whole seconds
        "ttl": Option((int, float), 3600, help="seconds from iat to exp", min=1,
                      message="expected a number of seconds from 1"),
        "claims": Option(dict, help="extra claims; strings may use {user} {host} {profile}"),
    }

    @classmethod
    def check_available(cls) -> None:
        from importlib.util import find_spec

        for module in ("jwt", "cryptography"):
            if find_spec(module) is None:
                raise Unavailable(f"{module} is not installed (pip install 'pyjwt[crypto]')")

    @classmethod
    def validate(cls, options: Mapping[str, Any], *, source: str, key: str) -> dict[str, Any]:
        result = super().validate(options, source=source, key=key)

        def fail(option: str, message: str) -> ConfigError:
            return ConfigError(message, source=source, key=f"{key}.{option}")

        if (result["key"] is None) == (result["key_file"] is None):
            raise fail("key", "set either key (the name of the backend holding the signing "
                              "key) or key_file (a PEM file), not both or neither")
        audience = result["audience"]
        if isinstance(audience, list) and not all(isinstance(a, str) for a in audience):
            raise fail("audience", "expected a string or a list of strings")
        claims = dict(result["claims"] or {})
        for name, value in claims.items():
            if name in MINTED_CLAIMS:
                raise fail(f"claims.{name}", "set by keyhelper for each token; remove it")
            if name in OPTION_CLAIMS:
                raise fail(f"claims.{name}", f"use the {OPTION_CLAIMS[name]} option instead")
            problem = _claim_problem(value)
            if problem:
                raise fail(f"claims.{name}", problem)
        if result["user"] is not None and not result["user"].strip():
            raise fail("user", "expected a login name, got an empty string")
        if result["subject"] is not None:
            problem = _template_problem(result["subject"])
            if problem:
                raise fail("subject", problem)
        result["claims"] = claims
        return result

    def watched_env(self) -> tuple[str, ...]:
        """Where the default user comes from the environment (Windows only), it keys the cache."""
        return LOGIN_VARS if self.config["user"] is None else ()

    # --- minting --------------------------------------------------------------------------

    def fetch(self) -> Token:
        import jwt  # 80 ms: only when a token is minted

        algorithm = self.config["algorithm"]
        signing = self.signing_key()
        values = self.placeholder_values()
        issued = int(self.context.now())
        expires = issued + int(self.config["ttl"])
        jti = secrets.token_urlsafe(16)
        payload: dict[str, Any] = {"user": values["user"]}
        payload.update({name: _render(value, values)
                        for name, value in self.config["claims"].items()})
        subject = self.config["subject"]
        payload["sub"] = values["user"] if subject is None else _render(subject, values)
        if self.config["issuer"] is not None:
            payload["iss"] = self.config["issuer"]
        if self.config["audience"] is not None:
            payload["aud"] = self.config["audience"]
        payload.update(iat=issued, nbf=issued, exp=expires, jti=jti)
        kid = self.config["kid"] or signing.kid
        headers = {"kid": kid} if kid else None
        try:
            value = jwt.encode(payload, signing.key, algorithm=algorithm, headers=headers)
        except (jwt.InvalidKeyError, ValueError, TypeError) as exc:
            # Our own checks ran first; this is a pyjwt refusal we did not foresee.
            raise BackendError(f"pyjwt refused the key from {signing.origin} for {algorithm} "
                               f"({type(exc).__name__})") from None
        return Token(value, expires_at=float(expires),
                     metadata={"algorithm": algorithm, "kid": kid or "", "jti": jti,
                               "sub": str(payload["sub"])})

    def placeholder_values(self) -> dict[str, str]:
        user = self.config["user"] or user_name(self.context.env)
        values = {"user": user, "host": "",
                  "profile": self.context.profile or ""}
        if _uses_host(self.config):
            import socket

            values["host"] = socket.gethostname()
        return values

    # --- the signing key ------------------------------------------------------------------

    def signing_key(self) -> SigningKey:
        """The key, checked against the algorithm; errors name where it came from only."""
        algorithm = self.config["algorithm"]
        if self.config["key_file"] is not None:
            path = os.path.expanduser(self.config["key_file"])
            text, origin = read_key_file(path), f"key_file {path}"
        else:
            name = self.config["key"]
            origin = f"backend {name!r}"
            try:
                text = self.context.fetch_other(name).value
            except ConfigError:
                raise
            except Skip as exc:
                raise Skip(f"signing key from {origin}: {exc.message}") from None
            except BackendError as exc:
                raise BackendError(f"signing key from {origin}: {exc.message}") from None
        return parse_signing_key(text, algorithm, origin)

    def public_jwk(self) -> dict[str, str]:
        """The public JWK of the signing key (for ``keyhelper jwks``)."""
        algorithm = self.config["algorithm"]
        if ALGORITHMS[algorithm] == "hmac":
            # Named after this backend: keyhelper jwks reports it as a usage error.
            raise BackendError(f"{algorithm} signs with a shared secret, which has no public "
                               "key to publish", backend=self.name)
        signing = self.signing_key()
        jwk = dict(signing.public_jwk or {})
        jwk.update(kid=self.config["kid"] or signing.kid or "", use="sig", alg=algorithm)
        return jwk


@dataclass(frozen=True)
class SigningKey:
    key: Any = None  # bytes (HMAC) or a cryptography private key
    origin: str = ""  # "backend 'signing'" or "key_file PATH", for messages
    public_jwk: Mapping[str, str] | None = None  # None for HMAC
    kid: str | None = None  # RFC 7638 thumbprint of the public key

    def __repr__(self) -> str:
        return f"SigningKey(origin={self.origin!r}, kid={self.kid!r})"


def read_key_file(path: str) -> str:
    """A private key file's text, read as every key file is (keyhelper.backend.read_user_file:
    no FIFO, no other user's file or symlink, no hard link, not open to group or others)."""
    data, why = read_user_file(path)
    if data is None:
        if why == MISSING:
            raise BackendError(f"cannot read key_file {path} (No such file or directory)")
        raise BackendError(f"key_file {path} {why}")
    if len(data) > MAX_KEY_BYTES:
        raise BackendError(f"key_file {path} is larger than 64 KiB: not a key")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise BackendError(f"key_file {path} is not text (a PEM key is)") from None
    redact.remember(text.strip())
    return text


def parse_signing_key(text: str, algorithm: str, origin: str) -> SigningKey:
    family = ALGORITHMS[algorithm]
    if family == "hmac":
        if "-----BEGIN" in text:
            raise BackendError(f"the key from {origin} is a PEM key, but {algorithm} needs "
                               "a shared secret")
        secret = text.strip().encode("utf-8")
        if len(secret) < HMAC_MIN_BYTES[algorithm]:
            raise BackendError(f"the HMAC secret from {origin} is {len(secret)} bytes; "
                               f"{algorithm} needs at least {HMAC_MIN_BYTES[algorithm]}")
        return SigningKey(secret, origin)
    key = load_private_key(text, origin)
    problem = _fit_problem(key, algorithm)
    if problem is not None:
        raise BackendError(f"the key from {origin} is {describe_key(key)}, but {algorithm} "
                           f"needs {problem}")
    jwk = public_jwk(key.public_key())
    return SigningKey(key, origin, jwk, thumbprint(jwk))


def load_private_key(text: str, origin: str) -> PrivateKeyTypes:
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    pem = normalise_pem(text, origin)
    if "ENCRYPTED" in pem:
        raise BackendError(f"the key from {origin} is encrypted with a passphrase; keyhelper "
                           "needs it unencrypted (keep it in a protected store instead)")
    first = pem.splitlines()[0]
    if "PUBLIC KEY" in first or "CERTIFICATE" in first:
        raise BackendError(f"the key from {origin} is a public key or certificate; signing "
                           "needs the private key")
    try:
        return load_pem_private_key(pem.encode("ascii"), password=None)
    except (ValueError, TypeError, UnicodeEncodeError):
        raise BackendError(f"the key from {origin} cannot be read as a PEM private key") from None
    except Exception as exc:  # cryptography's UnsupportedAlgorithm and kin
        raise BackendError(f"the key from {origin} is of a kind keyhelper cannot sign with "
                           f"({type(exc).__name__})") from None


def normalise_pem(text: str, origin: str) -> str:
    """A PEM block with proper line breaks, also from a value whose line breaks were lost
    (a single line with spaces, or literal ``\\n`` as environment variables often hold)."""
    text = text.strip()
    if "\n" not in text and "\\n" in text:
        text = text.replace("\\n", "\n")
    if not text.startswith("-----BEGIN "):
        raise BackendError(f"the key from {origin} is not a PEM private key "
                           "(expected -----BEGIN ... PRIVATE KEY-----)")
    head, _, rest = text[len("-----BEGIN "):].partition("-----")
    end = f"-----END {head}-----"
    if end not in rest:
        raise BackendError(f"the key from {origin} is cut short (no {end} line); the file "
                           "and command backends keep only the first line: use key_file")
    body = rest[: rest.index(end)]
    if ":" in body:  # RFC 1421 headers (Proc-Type: 4,ENCRYPTED ...): keep as written
        return f"-----BEGIN {head}-----{body}{end}\n"
    b64 = "".join(body.split())
    lines = [b64[i:i + 64] for i in range(0, len(b64), 64)]
    return "\n".join([f"-----BEGIN {head}-----", *lines, end, ""])


def _fit_problem(key: PrivateKeyTypes, algorithm: str) -> str | None:
    """What the algorithm needs that ``key`` is not, or None when it fits."""
    from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

    family = ALGORITHMS[algorithm]
    if family == "rsa":
        fits = isinstance(key, rsa.RSAPrivateKey) and key.key_size >= MIN_RSA_BITS
        return None if fits else NEEDS["rsa"]
    if family == "ec":
        curve, label = EC_CURVES[algorithm]
        fits = isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == curve
        return None if fits else f"an EC private key on {label}"
    fits = isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey)
    return None if fits else NEEDS["okp"]


def describe_key(key: PrivateKeyTypes) -> str:
    from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

    if isinstance(key, rsa.RSAPrivateKey):
        return f"an RSA key of {key.key_size} bits"
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return f"an EC key on {key.curve.name}"
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "an Ed25519 key"
    if isinstance(key, ed448.Ed448PrivateKey):
        return "an Ed448 key"
    return f"a {type(key).__name__.removeprefix('_').replace('PrivateKey', '')} key"


# --- JWK ----------------------------------------------------------------------------------

def public_jwk(key: PublicKeyTypes) -> dict[str, str]:
    """The members of a public JWK (RFC 7517/7518/8037), without kid/use/alg."""
    from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    if isinstance(key, rsa.RSAPublicKey):
        numbers = key.public_numbers()
        return {"kty": "RSA", "n": _b64_int(numbers.n), "e": _b64_int(numbers.e)}
    if isinstance(key, ec.EllipticCurvePublicKey):
        size = (key.curve.key_size + 7) // 8
        point = key.public_numbers()
        crv = {"secp256r1": "P-256", "secp384r1": "P-384"}[key.curve.name]
        return {"kty": "EC", "crv": crv, "x": _b64(point.x.to_bytes(size, "big")),
                "y": _b64(point.y.to_bytes(size, "big"))}
    if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        crv = "Ed25519" if isinstance(key, ed25519.Ed25519PublicKey) else "Ed448"
        raw = key.public_bytes(Encoding.Raw, PublicFormat.Raw)
        return {"kty": "OKP", "crv": crv, "x": _b64(raw)}
    raise BackendError(f"no JWK form for {type(key).__name__}")


def thumbprint(jwk: Mapping[str, str]) -> str:
    """RFC 7638 JWK thumbprint (SHA-256): the required members, sorted, no whitespace."""
    required = {"RSA": ("e", "kty", "n"), "EC": ("crv", "kty", "x", "y"),
                "OKP": ("crv", "kty", "x")}[jwk["kty"]]
    canonical = json.dumps({m: jwk[m] for m in required}, separators=(",", ":"),
                           sort_keys=True)
    return _b64(hashlib.sha256(canonical.encode()).digest())


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64_int(value: int) -> str:
    return _b64(value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big"))


# --- claims -------------------------------------------------------------------------------

def user_name(env: Mapping[str, str]) -> str:
    """The login name of the account keyhelper runs as: not $LOGNAME or $USER, which any
    caller (a project's settings env block) could set to be someone else."""
    name = login_name(env)
    if name is None:
        raise BackendError("cannot tell the login name for the user claim: set the "
                           "backend's user option")
    return name


def _template_problem(text: str) -> str | None:
    """Why ``text`` is not a valid claim template, or None. Only bare {user}, {host} and
    {profile} are allowed: no attribute access, index or format spec."""
    try:
        fields = [(name, spec, conv) for _, name, spec, conv in string.Formatter().parse(text)
                  if name is not None]
    except ValueError as exc:
        return f"not a valid template ({exc}); write {{{{ and }}}} for literal braces"
    for name, spec, conv in fields:
        if name not in PLACEHOLDERS or spec or conv:
            return (f"unknown placeholder {{{name}}} (use {{user}}, {{host}} or {{profile}}; "
                    "{{ and }} for literal braces)")
    return None


def _claim_problem(value: Any) -> str | None:
    if isinstance(value, str):
        return _template_problem(value)
    if isinstance(value, bool | int | float):
        return None
    if isinstance(value, list):
        return next((p for p in map(_claim_problem, value) if p), None)
    if isinstance(value, dict):
        return next((p for p in map(_claim_problem, value.values()) if p), None)
    return f"expected a string, number, boolean, list or table, got {type(value).__name__}"


def _render(value: Any, values: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        return value.format_map(values)
    if isinstance(value, list):
        return [_render(item, values) for item in value]
    if isinstance(value, dict):
        return {k: _render(v, values) for k, v in value.items()}
    return value


def _uses_host(config: Mapping[str, Any]) -> bool:
    return "{host}" in json.dumps([config["claims"], config["subject"]])
