"""Signing keys for the jwt backend tests, and verification with jwcrypto: a JOSE library
independent of the pyjwt that mints the tokens."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from jwcrypto import jwk, jws, jwt

# HMAC secrets exactly as long as each hash needs (RFC 7518 3.2).
HMAC_SECRETS = {"HS256": "s" * 32, "HS384": "t" * 48, "HS512": "u" * 64}
# The key kind each asymmetric algorithm is tested with.
KEY_KINDS = {"RS256": "rsa", "RS384": "rsa", "RS512": "rsa", "PS256": "rsa",
             "ES256": "p256", "ES384": "p384", "EdDSA": "ed25519"}
ALGORITHMS = [*HMAC_SECRETS, *KEY_KINDS]


@dataclass(frozen=True)
class KeyPair:
    private_pem: str
    public_pem: str


@cache
def key_pair(kind: str) -> KeyPair:
    """One key per kind and test session (RSA generation is the slow part)."""
    private: Any = {
        "rsa": lambda: rsa.generate_private_key(65537, 2048),
        "rsa1024": lambda: rsa.generate_private_key(65537, 1024),  # noqa: S505 - to be refused
        "p256": lambda: ec.generate_private_key(ec.SECP256R1()),
        "p384": lambda: ec.generate_private_key(ec.SECP384R1()),
        "ed25519": ed25519.Ed25519PrivateKey.generate,
        "ed448": ed448.Ed448PrivateKey.generate,
    }[kind]()
    private_pem = private.private_bytes(serialization.Encoding.PEM,
                                        serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()).decode()
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return KeyPair(private_pem, public_pem)


def signing_material(algorithm: str) -> str:
    """What the jwt backend signs with: an HMAC secret or a private PEM."""
    if algorithm in HMAC_SECRETS:
        return HMAC_SECRETS[algorithm]
    return key_pair(KEY_KINDS[algorithm]).private_pem


def write_key_file(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def verifying_key(algorithm: str) -> jwk.JWK:
    """The jwcrypto key that checks a token of ``algorithm`` (the public half, or the
    shared secret)."""
    if algorithm in HMAC_SECRETS:
        secret = HMAC_SECRETS[algorithm].encode()
        return jwk.JWK(kty="oct", k=base64.urlsafe_b64encode(secret).rstrip(b"=").decode())
    return jwk.JWK.from_pem(key_pair(KEY_KINDS[algorithm]).public_pem.encode())


def verify(token: str, key: jwk.JWK, algorithm: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Check signature, exp and nbf with jwcrypto (at the current, maybe frozen, time);
    return (header, claims)."""
    checked = jwt.JWT(jwt=token, key=key, algs=[algorithm])
    return json.loads(checked.header), json.loads(checked.claims)


def signature_fails(token: str, key: jwk.JWK, algorithm: str) -> bool:
    try:
        jwt.JWT(jwt=token, key=key, algs=[algorithm])
    except jws.InvalidJWSSignature:
        return True
    return False


def unverified(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Header and claims, without checking anything (to compare with what jwcrypto says)."""
    header, claims, _ = token.split(".")

    def decode(part: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
        return data

    return decode(header), decode(claims)
