"""A broken or malicious OpenID provider on loopback, for the oidc backend's refusals.

A stand-in on purpose: a certified provider (panva's, fixtures_oidc) cannot be made to sign
with the wrong key, name another issuer, answer 300 KiB or redirect its token endpoint.
``mode`` picks the fault; the authorization endpoint redirects straight back with a code (no
person needed), and the token endpoint answers with an ID token built for the fault.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import jwt
from jwt_keys import key_pair

CLIENT_ID = "keyhelper"


@cache
def other_rsa_key() -> str:
    """An RSA key the provider does not publish."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    return rsa.generate_private_key(65537, 2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()).decode()


@dataclass
class Rogue:
    mode: str = "ok"
    port: int = 0
    nonce: str = ""
    token_calls: int = 0
    seen: list[str] = field(default_factory=list)
    device_polls: list[float] = field(default_factory=list)  # when each poll came
    device_answers: list[str] = field(default_factory=lambda: [
        "authorization_pending", "slow_down"])  # then tokens

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def id_token(self) -> str:
        now = int(time.time())
        claims = {"iss": self.issuer, "aud": CLIENT_ID, "sub": "alice", "iat": now,
                  "exp": now + 300, "nonce": self.nonce}
        key = key_pair("rsa").private_pem
        if self.mode == "wrong_iss":
            claims["iss"] = "http://127.0.0.1:1"
        elif self.mode == "wrong_aud":
            claims["aud"] = "another-client"
        elif self.mode == "wrong_nonce":
            claims["nonce"] = "not-the-login-nonce"
        elif self.mode == "wrong_key":
            key = other_rsa_key()  # same kid, not the published key
        elif self.mode == "skewed":  # the provider's clock runs 100 s ahead of ours
            claims.update(iat=now + 100, exp=now + 400)
        return jwt.encode(claims, key, algorithm="RS256", headers={"kid": "k1"})

    def jwks(self) -> dict[str, Any]:
        from cryptography.hazmat.primitives.serialization import load_pem_public_key

        public = load_pem_public_key(key_pair("rsa").public_pem.encode())
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(public))
        jwk.update(kid="k1", use="sig", alg="RS256")
        return {"keys": [jwk]}


def _handler(rogue: Rogue) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _json(self, status: int, body: Any, extra: bytes = b"") -> None:
            data = json.dumps(body).encode() + extra
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            rogue.seen.append(parts.path)
            if parts.path == "/.well-known/openid-configuration":
                token = rogue.issuer + "/token"
                if rogue.mode == "foreign_endpoint":
                    token = f"http://127.0.0.2:{rogue.port}/token"
                issuer = "http://127.0.0.1:1" if rogue.mode == "other_issuer" else rogue.issuer
                self._json(200, {"issuer": issuer, "token_endpoint": token,
                                 "authorization_endpoint": rogue.issuer + "/auth",
                                 "device_authorization_endpoint": rogue.issuer + "/device",
                                 "jwks_uri": rogue.issuer + "/jwks"})
            elif parts.path == "/jwks":
                self._json(200, rogue.jwks())
            elif parts.path == "/auth":
                query = dict(parse_qsl(parts.query))
                rogue.nonce = query["nonce"]
                self.send_response(302)
                self.send_header("location", query["redirect_uri"] + "?" + urlencode(
                    {"code": "c0de", "state": query["state"]}))
                self.send_header("content-length", "0")
                self.end_headers()
            else:
                self._json(404, {})

        def do_POST(self) -> None:
            form = dict(parse_qsl(self.rfile.read(int(self.headers.get("content-length")
                                                      or 0)).decode()))
            if self.path == "/device":
                self._json(200, {"device_code": "dc-" + "d" * 30, "user_code": "ABCD-EFGH",
                                 "verification_uri": rogue.issuer + "/activate",
                                 "interval": 1, "expires_in": 60})
                return
            if form.get("grant_type", "").endswith("device_code"):
                rogue.device_polls.append(time.monotonic())
                if rogue.device_answers:
                    self._json(400, {"error": rogue.device_answers.pop(0)})
                    return
            rogue.token_calls += 1
            if rogue.mode == "error500":
                self._json(500, {"error": "server_error"})
                return
            if rogue.mode == "slow":
                time.sleep(3)
            if rogue.mode == "redirect":
                self.send_response(307)
                self.send_header("location", "http://127.0.0.2:9/steal")
                self.send_header("content-length", "0")
                self.end_headers()
                return
            body = {"access_token": "at-" + "a" * 40, "token_type": "Bearer",
                    "expires_in": 300, "refresh_token": "rt-" + "r" * 40,
                    "id_token": rogue.id_token()}
            if rogue.mode == "huge":
                body["padding"] = "x" * (300 * 1024)
            self._json(200, body)

    return Handler


@contextmanager
def start_rogue(mode: str = "ok") -> Iterator[Rogue]:
    rogue = Rogue(mode)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(rogue))
    rogue.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield rogue
    finally:
        server.shutdown()
        server.server_close()
