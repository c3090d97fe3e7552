"""The jwt backend against keyhelper's plugin contract kit (keyhelper.testing).

A minting backend cannot return a given key, so "returns the exact key" becomes "returns a
token signed with the given secret" (checked by jwcrypto); the rest of the kit applies as is:
the key (here: the HMAC secret) never shows, unconfigured means Skip, broken means failure,
and importing the module or check_available() loads no heavy library."""

from __future__ import annotations

import base64
import time
from pathlib import Path

from jwcrypto import jwk
from jwt_keys import verify, write_key_file

from keyhelper.backend import Token
from keyhelper.errors import Skip
from keyhelper.testing import BackendContract, FailureContract, Setup, SkipContract


def hmac_key(secret: str) -> jwk.JWK:
    return jwk.JWK(kty="oct", k=base64.urlsafe_b64encode(secret.encode()).rstrip(b"=").decode())


class TestJwtBackendContract(BackendContract, SkipContract, FailureContract):
    backend_type = "jwt"
    distribution = "keyhelper"

    def configured(self, key: str, tmp_path: Path) -> Setup:
        secret = write_key_file(tmp_path / "hs256.key", key)
        return Setup({"algorithm": "HS256", "key_file": str(secret), "user": "kit"})

    def unconfigured(self, tmp_path: Path) -> Setup:
        return Setup({"algorithm": "RS256", "key": "signing"})

    def failing(self, key: str, tmp_path: Path) -> Setup:
        secret = write_key_file(tmp_path / "hs256.key", key, 0o644)
        return Setup({"algorithm": "HS256", "key_file": str(secret), "user": "kit"})

    def resolve_other(self, name: str) -> Token:
        raise Skip("$JWT_SIGNING_KEY is not set")

    def test_returns_the_exact_key(self, key: str, tmp_path: Path) -> None:
        """Replaced: the token is minted, and signed with the configured secret."""
        backend = self.make_backend(self.configured(key, tmp_path), tmp_path)
        token = self.fetch(backend)
        _, claims = verify(token.value, hmac_key(key), "HS256")
        assert claims["user"] == "kit"
        assert token.expires_at == claims["exp"] and token.expires_at > time.time()
        assert key not in token.value
        assert all(key not in value for value in token.metadata.values())
