"""A real consumer of minted tokens: OpenBao's JWT auth method (the Vault API), told to
trust the signing key either by its public PEM or by the JWKS ``keyhelper jwks`` prints,
served from a loopback HTTP server. Tokens come from the real console script."""

from __future__ import annotations

import http.server
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fixtures_openbao import OpenBao
from helpers import keyhelper
from jwt_keys import key_pair, signing_material, write_key_file

from keyhelper.testing.fixtures import WriteConfig

pytestmark = pytest.mark.vault

ISSUER = "https://keyhelper.test"
AUDIENCE = "vault-test"
USER = "alice"
WRONG_AUDIENCE = {"errors": ["error validating token: invalid audience (aud) claim: audience "
                             "claim does not match any expected audience"]}
PEM_KINDS = {"RS256": "rsa", "PS256": "rsa", "ES256": "p256", "ES384": "p384",
             "EdDSA": "ed25519"}


def login(bao: OpenBao, mount: str, token: str) -> tuple[int, dict[str, Any]]:
    """POST auth/MOUNT/login without a Vault token, as a client would; (status, body)."""
    request = urllib.request.Request(
        f"{bao.addr}/v1/auth/{mount}/login", method="POST",
        data=json.dumps({"role": "dev", "jwt": token}).encode())
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def jwt_auth(bao: OpenBao, trust: dict[str, Any]) -> str:
    """A fresh JWT auth mount trusting ``trust`` (pubkeys or jwks_url), with a role that
    binds the audience and the team claim and names the entity after the user claim."""
    mount = bao.enable_auth("jwt", bao.unique("jwt"))
    bao.api("POST", f"auth/{mount}/config", {"bound_issuer": ISSUER, **trust})
    bao.api("POST", f"auth/{mount}/role/dev", {
        "role_type": "jwt", "bound_audiences": [AUDIENCE], "user_claim": "user",
        "bound_claims": {"team": "engineering"}, "claim_mappings": {"team": "team"},
        "token_policies": ["default"], "token_ttl": "5m"})
    return mount


def mint(write_config: WriteConfig, key_file: Path, algorithm: str,
         audience: str = AUDIENCE) -> str:
    write_config(f'[backends.jwt]\nalgorithm = "{algorithm}"\nkey_file = "{key_file}"\n'
                 f'issuer = "{ISSUER}"\naudience = "{audience}"\nuser = "{USER}"\n'
                 '[backends.jwt.claims]\nteam = "engineering"\n')
    run = keyhelper("--backend", "jwt", "--no-cache")
    assert (run.returncode, run.stderr) == (0, ""), run.stderr
    return run.stdout.strip()


def assert_logged_in_as_alice(bao: OpenBao, status: int, body: dict[str, Any]) -> None:
    assert status == 200, body
    auth = body["auth"]
    assert auth["metadata"] == {"role": "dev", "team": "engineering"}
    assert auth["policies"] == ["default"]
    entity = bao.api("GET", f"identity/entity/id/{auth['entity_id']}")["data"]
    assert [alias["name"] for alias in entity["aliases"]] == [USER]
    # The Vault token it issued works.
    assert bao.api("GET", "auth/token/lookup-self",
                   token=auth["client_token"])["data"]["meta"]["team"] == "engineering"


@pytest.mark.parametrize("algorithm", list(PEM_KINDS))
def test_openbao_accepts_a_minted_token_and_rejects_a_wrong_audience(
        algorithm: str, openbao: OpenBao, write_config: WriteConfig, tmp_path: Path) -> None:
    mount = jwt_auth(openbao, {"jwt_validation_pubkeys":
                               [key_pair(PEM_KINDS[algorithm]).public_pem]})
    key_file = write_key_file(tmp_path / "signing.pem", signing_material(algorithm))

    status, body = login(openbao, mount, mint(write_config, key_file, algorithm))
    assert_logged_in_as_alice(openbao, status, body)

    status, body = login(openbao, mount,
                         mint(write_config, key_file, algorithm, audience="someone-else"))
    assert (status, body) == (400, WRONG_AUDIENCE)


def test_openbao_rejects_a_token_signed_by_another_key(
        openbao: OpenBao, write_config: WriteConfig, tmp_path: Path) -> None:
    mount = jwt_auth(openbao, {"jwt_validation_pubkeys": [key_pair("p256").public_pem]})
    other = write_key_file(tmp_path / "other.pem", key_pair("p384").private_pem)
    status, body = login(openbao, mount, mint(write_config, other, "ES384"))
    assert status == 400
    assert body["errors"][0].startswith("error validating token:")


@pytest.fixture
def jwks_server() -> Iterator[tuple[str, list[bytes]]]:
    """A loopback HTTP server answering GET /jwks with whatever the test puts in the list."""
    document: list[bytes] = [b"{}"]

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(document[0])

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/jwks", document
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("algorithm", ["RS256", "ES256", "EdDSA"])
def test_openbao_trusts_the_jwks_that_keyhelper_prints(
        algorithm: str, openbao: OpenBao, write_config: WriteConfig, tmp_path: Path,
        jwks_server: tuple[str, list[bytes]]) -> None:
    url, document = jwks_server
    key_file = write_key_file(tmp_path / "signing.pem", signing_material(algorithm))
    token = mint(write_config, key_file, algorithm)
    published = keyhelper("jwks", "--backend", "jwt")
    assert published.returncode == 0, published.stderr
    document[0] = published.stdout.encode()
    mount = jwt_auth(openbao, {"jwks_url": url})

    status, body = login(openbao, mount, token)
    assert_logged_in_as_alice(openbao, status, body)
    status, body = login(openbao, mount,
                         mint(write_config, key_file, algorithm, audience="someone-else"))
    assert (status, body) == (400, WRONG_AUDIENCE)
